"""Shadow scoring (ferry.serving.shadow) with real torch modules and a real Parquet log under tmp_path, and the
rollout's paired sample read back from those files (ferry.steps.outcomes)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from ferry.adapters.workloads import load_workload
from ferry.contract.names import LOG_SHADOW
from ferry.serving.prediction_log import LogLimits, ServingLog, read_log
from ferry.serving.shadow import ShadowScorer, shadow_batches
from ferry.serving.watcher import Loaded, RolloutState
from ferry.steps.outcomes import LogOutcomes

MODEL = "fraud-detector"


class Scale(torch.nn.Module):
    """A model whose score is a fixed function of the first feature (champion and challenger differ)."""

    def __init__(self, factor: float, fail: bool = False) -> None:
        super().__init__()
        self.factor, self.fail = factor, fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("broken challenger")
        return torch.sigmoid(self.factor * x[:, 0])


def state(sample: float, fail: bool = False) -> RolloutState:
    return RolloutState(Loaded("1", Scale(1.0)), Loaded("2", Scale(-1.0, fail)), weight=10, shadow_sample=sample)


def test_rows_go_to_the_model_that_did_not_answer_them() -> None:
    versions = np.array(["1", "2", "1", "9"], dtype=object)
    features = np.arange(8, dtype=np.float32).reshape(4, 2)
    batches = shadow_batches(state(1.0), versions, ["a", "b", "c", "d"], [0, 1, 2, 3], features,
                             np.random.default_rng(0))
    by_role = {b.variant: b for b in batches}
    assert by_role["challenger"].keys == ["a", "c"] and by_role["challenger"].model.version == "2"
    assert by_role["champion"].keys == ["b"]  # "d" was answered by a version that is no alias now: left out
    assert shadow_batches(RolloutState(Loaded("1", Scale(1.0))), versions, list("abcd"), [0] * 4, features,
                          np.random.default_rng(0)) == []


def test_the_sample_share_is_what_is_mirrored() -> None:
    n = 20_000
    batches = shadow_batches(state(0.25), np.array(["1"] * n, dtype=object), list(range(n)), [0] * n,
                             np.zeros((n, 2), dtype=np.float32), np.random.default_rng(1))
    assert abs(len(batches[0].keys) / n - 0.25) < 0.02


def payments(n: int, start: datetime) -> list:
    workload = load_workload("fraud_detection")
    rng = np.random.default_rng(3)
    return [workload.raw_request_model(transaction_id=f"t{i}", tx_datetime=start + timedelta(minutes=i),
                                       customer_id=int(rng.integers(0, 50)), terminal_id=int(rng.integers(0, 90)),
                                       tx_amount=float(rng.gamma(2, 30))) for i in range(n)]


def serving_log(tmp_path: Path) -> ServingLog:
    workload = load_workload("fraud_detection")
    return ServingLog(tmp_path.as_uri(), MODEL, workload.raw_request_model, workload.label_model,
                      workload.feature_names, workload.event_time_field, LogLimits(flush_interval_s=0.05))


def serve(log: ServingLog, scorer: ShadowScorer, rows: list, current: RolloutState) -> np.ndarray:
    """What the router's raw path does for one batch: answer (champion for even rows), log, offer to shadow."""
    features = np.random.default_rng(5).normal(size=(len(rows), len(log.feature_names))).astype(np.float32)
    versions = np.array(["1" if i % 2 == 0 else "2" for i in range(len(rows))], dtype=object)
    answered = torch.sigmoid(torch.from_numpy(features[:, 0])).numpy().astype(np.float64)
    scores = np.where(versions == "1", answered, 1 - answered)
    log.scored(rows, features, {"version": versions, "variant": np.where(versions == "1", "champion", "challenger"),
                                "score": scores, "decision": scores > 0.5},
               np.zeros(len(rows), dtype=bool), time.time())
    scorer.offer(current, versions, [r.transaction_id for r in rows], [r.tx_datetime for r in rows], features)
    return features


def test_shadow_scores_pair_with_answers_and_labels_in_the_log(tmp_path: Path) -> None:
    log = serving_log(tmp_path)
    scorer = ShadowScorer(log, seed=0)
    workload = load_workload("fraud_detection")
    since = time.time() - 1
    rows = payments(200, datetime(2018, 5, 1))
    features = serve(log, scorer, rows, state(1.0))
    label = workload.label_model
    log.labelled([label(transaction_id=r.transaction_id, fraud=i % 10 == 0) for i, r in enumerate(rows[:150])],
                 time.time())
    scorer.close()
    log.close()
    sample = LogOutcomes(tmp_path.as_uri(), MODEL, workload).sample("1", "2", since)
    assert sample.labelled == 150 and sample.positives == 15 and sample.shadow_rows == 100
    expected = torch.sigmoid(torch.from_numpy(features[:150, 0])).numpy()
    order = [int(key[1:]) for key in sample.rows["transaction_id"]]
    np.testing.assert_allclose(sample.champion, expected[order], rtol=1e-6)  # answered or shadow: the same model
    np.testing.assert_allclose(sample.challenger, 1 - expected[order], rtol=1e-6)
    assert list(sample.rows["tx_fraud"]) == [int(i % 10 == 0) for i in order]


def test_a_failing_shadow_model_is_counted_and_never_raises(tmp_path: Path) -> None:
    log = serving_log(tmp_path)
    scorer = ShadowScorer(log, seed=0)
    since = time.time() - 1
    serve(log, scorer, payments(40, datetime(2018, 5, 1)), state(1.0, fail=True))
    scorer.close()
    log.close()
    sample = LogOutcomes(tmp_path.as_uri(), MODEL, load_workload("fraud_detection")).sample("1", "2", since)
    assert scorer.failed_rows == 20 and sample.shadow_failures == 20 and sample.labelled == 0


def test_a_full_queue_drops_rows_instead_of_blocking(tmp_path: Path) -> None:
    log = serving_log(tmp_path)
    gate = threading.Event()

    class Slow(Scale):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gate.wait(5)
            return super().forward(x)

    slow = RolloutState(Loaded("1", Scale(1.0)), Loaded("2", Slow(1.0)), weight=0, shadow_sample=1.0)
    scorer = ShadowScorer(log, max_queued_rows=30, seed=0)
    started = time.perf_counter()
    for chunk in range(5):
        versions = np.array(["1"] * 20, dtype=object)
        scorer.offer(slow, versions, [f"{chunk}-{i}" for i in range(20)], [datetime(2018, 5, 1)] * 20,
                     np.zeros((20, 15), dtype=np.float32))
    # an offer that waited for the stalled model would wait out its 5 s gate; loose for a loaded machine
    assert time.perf_counter() - started < 4.0
    assert scorer.dropped_rows >= 40
    gate.set()
    scorer.close()
    log.close()


def test_rows_queued_while_the_worker_scores_are_scored_in_one_pass_per_model(tmp_path: Path) -> None:
    """Single payments one by one: the worker joins what queued during its last pass into one forward pass and
    one log batch per model, and every row still gets its own model's score."""
    log = serving_log(tmp_path)
    gate, entered = threading.Event(), threading.Event()

    class Held(Scale):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            entered.set()
            gate.wait(5)
            return super().forward(x)

    held = RolloutState(Loaded("1", Scale(1.0)), Loaded("2", Held(-1.0)), weight=10, shadow_sample=1.0)
    scorer = ShadowScorer(log, seed=0, coalesce_s=0)
    rows = payments(21, datetime(2018, 5, 1))
    serve(log, scorer, rows[:1], held)
    assert entered.wait(5), "the first payment's pass started"
    features = np.concatenate([serve(log, scorer, [row], held) for row in rows[1:]])
    gate.set()
    scorer.close()
    log.close()
    # each payment came alone, so the champion ("1") answered it and the held challenger scored it in shadow
    assert scorer.passes == 2 and scorer.done_rows == 21
    shadow = read_log(tmp_path.as_uri(), LOG_SHADOW, MODEL).to_pandas().set_index("transaction_id")
    expected = 1 - torch.sigmoid(torch.from_numpy(features[:, 0])).numpy()
    np.testing.assert_allclose(shadow.loc[[r.transaction_id for r in rows[1:]], "score"], expected, rtol=1e-6)
    assert len(shadow) == 21 and shadow["version"].eq("2").all()


def test_nothing_logged_is_an_empty_sample(tmp_path: Path) -> None:
    sample = LogOutcomes(tmp_path.as_uri(), MODEL, load_workload("fraud_detection")).sample("1", "2", 0.0)
    assert sample.labelled == 0 and sample.shadow_rows == 0


@pytest.fixture(autouse=True)
def _quiet_torch() -> None:
    torch.set_num_threads(1)
