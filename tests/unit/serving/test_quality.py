"""Model quality from labelled traffic (ferry.serving.quality) over a real Parquet log under tmp_path."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np
from tests.unit.serving.test_shadow import MODEL, payments, serving_log

from ferry.adapters.workloads import load_workload
from ferry.serving.quality import QualityMonitor, measure
from fraud_detection.metrics import evaluate_named


class Gauges:
    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], float] = {}

    def set(self, version: str, variant: str, metric: str, value: float) -> None:
        self.values[(version, variant, metric)] = value


def logged(tmp_path: Path, n: int = 400, labelled: int = 300) -> tuple[list, np.ndarray, np.ndarray]:
    """`n` payments answered by v1 (even) and v2 (odd), the first `labelled` of them labelled (every 7th a fraud)."""
    log, workload = serving_log(tmp_path), load_workload("fraud_detection")
    rows = payments(n, datetime(2018, 5, 1))
    scores = np.random.default_rng(2).random(n)
    fraud = np.arange(n) % 7 == 0
    scores[fraud] = np.minimum(scores[fraud] + 0.4, 1.0)  # the models see something
    versions = np.array(["1" if i % 2 == 0 else "2" for i in range(n)], dtype=object)
    log.scored(rows, np.zeros((n, len(log.feature_names)), dtype=np.float32),
               {"version": versions, "variant": np.where(versions == "1", "champion", "challenger"),
                "score": scores, "decision": scores > 0.5}, np.zeros(n, dtype=bool), time.time())
    log.labelled([workload.label_model(transaction_id=r.transaction_id, fraud=bool(fraud[i]))
                  for i, r in enumerate(rows[:labelled])], time.time())
    log.close()
    return rows, scores, fraud


def test_each_version_and_variant_is_measured_on_its_labelled_traffic(tmp_path: Path) -> None:
    _, scores, fraud = logged(tmp_path)
    workload = load_workload("fraud_detection")
    found = measure(tmp_path.as_uri(), MODEL, workload, ["average_precision", "auc_roc"], time.time() - 60)
    assert set(found) == {(v, r, m) for v, r in (("1", "champion"), ("2", "challenger"))
                          for m in ("average_precision", "auc_roc")}
    for version, start in (("1", 0), ("2", 1)):
        index = np.arange(start, 300, 2)
        rows = workload.history_from_log(_frame(index, fraud))  # in time order, which is index order here
        assert list(rows["transaction_id"]) == [f"t{i}" for i in index]
        expected = evaluate_named(rows, scores[index], ["average_precision"])
        assert abs(found[(version, "champion" if version == "1" else "challenger", "average_precision")]
                   - expected["average_precision"]) < 1e-12


def _frame(index: np.ndarray, fraud: np.ndarray):
    import pandas as pd

    rows = payments(400, datetime(2018, 5, 1))
    return pd.DataFrame({"transaction_id": [rows[i].transaction_id for i in index],
                         "tx_datetime": [rows[i].tx_datetime for i in index],
                         "customer_id": [rows[i].customer_id for i in index],
                         "terminal_id": [rows[i].terminal_id for i in index],
                         "tx_amount": [rows[i].tx_amount for i in index], "fraud": fraud[index]})


def test_too_few_labelled_positives_publish_nothing(tmp_path: Path) -> None:
    logged(tmp_path, labelled=60)  # 9 frauds, 4-5 per version: under MIN_POSITIVES
    assert measure(tmp_path.as_uri(), MODEL, load_workload("fraud_detection"), ["average_precision"], 0.0) == {}


def test_old_traffic_is_outside_the_window(tmp_path: Path) -> None:
    logged(tmp_path)
    assert measure(tmp_path.as_uri(), MODEL, load_workload("fraud_detection"), ["average_precision"],
                   time.time() + 60) == {}


def test_the_monitor_sets_gauges_and_keeps_them_when_the_log_is_unreadable(tmp_path: Path) -> None:
    logged(tmp_path)
    gauges = Gauges()
    monitor = QualityMonitor(MODEL, tmp_path.as_uri(), load_workload("fraud_detection"), ["average_precision"],
                             3600, gauges)
    assert monitor.publish() and len(gauges.values) == 2
    before = dict(gauges.values)
    monitor.uri = "unknownscheme://nowhere"
    assert monitor.publish() == {} and monitor.failing and gauges.values == before
