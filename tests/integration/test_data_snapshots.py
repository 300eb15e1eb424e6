"""`data.source: log` and content-addressed snapshots, with a real MLflow server (the session's) and a prediction
log written by serving's own writer: the data step trains on the labelled window of what was served, records it as
the run's dataset input, stores an unchanged window once, and refuses a window it cannot fill without recording a
finished run."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from ferry.adapters.workloads import load_workload
from ferry.contract import names
from ferry.contract.errors import StepFailed
from ferry.serving.prediction_log import ServingLog
from ferry.settings import Settings
from ferry.spec import load_specs
from ferry.steps import data as data_step
from ferry.steps.context import build_context

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
WINDOW = {"days": 21, "label_delay_days": 7, "min_labelled_rows": 200}
UNLABELLED_EVERY = 10  # every 10th payment's label never comes back


def log_spec(name: str, **window: Any) -> str:
    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    body = json.loads(specs[0].model.model_dump_json())
    body["metadata"]["name"] = name
    body["spec"]["data"] = {"source": "log", "window": {**WINDOW, **window},
                            "split": {"train_days": 7, "delay_days": 7, "test_days": 7}}
    return json.dumps(body)


def serve_history(settings: Settings, model: str, requests: pd.DataFrame, labels: pd.DataFrame) -> None:
    """Log `requests` as the router does (features and answers do not matter here), and the labels that came
    back: all but every UNLABELLED_EVERY-th."""
    workload: Any = load_workload("fraud_detection")
    log = ServingLog(settings.prediction_log_uri, model, workload.raw_request_model, workload.label_model,
                     workload.feature_names, workload.event_time_field)
    for start in range(0, len(requests), 2000):
        chunk = requests.iloc[start:start + 2000]
        rows = [workload.raw_request_model.model_validate(r) for r in chunk.to_dict("records")]
        n = len(rows)
        log.scored(rows, np.zeros((n, len(workload.feature_names)), np.float32),
                   {"version": ["1"] * n, "variant": ["champion"] * n, "score": np.zeros(n),
                    "decision": np.zeros(n, bool)}, np.zeros(n, bool), 1.7e9)
        answered = labels.iloc[start:start + 2000]
        kept = answered[np.arange(start, start + n) % UNLABELLED_EVERY != 0]
        log.labelled([workload.label_model.model_validate(r) for r in kept.to_dict("records")], 1.7e9)
    log.close()


@pytest.fixture(scope="module")
def history() -> tuple[pd.DataFrame, pd.DataFrame]:
    from fraud_detection.simulator import SimulatorParams, simulate

    workload: Any = load_workload("fraud_detection")
    frame = simulate(SimulatorParams(customers=150, terminals=300, days=30, start_date="2018-04-01", seed=3))
    return workload.raw_history(frame)


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    settings = Settings(home=tmp_path, mlflow_port=int(mlflow_uri.rsplit(":", 1)[1]), outputs_dir=tmp_path / "out")
    assert settings.mlflow_uri == mlflow_uri
    return settings


def data_run(settings: Settings, spec: str, workflow: str) -> tuple[Any, Any]:
    ctx = build_context(names.STEP_DATA, spec, workflow, None, settings)
    data_step.run(ctx)
    return ctx, ctx.require_run(names.STEP_DATA)


def test_a_log_window_is_trained_on_and_an_unchanged_one_is_stored_once(
        settings: Settings, history: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    requests, labels = history
    spec = log_spec("fraud-log-window")
    first_days = requests["tx_datetime"] < pd.Timestamp("2018-04-29")
    serve_history(settings, "fraud-log-window", requests[first_days], labels[first_days])
    # `ferry up`'s smoke payment (event time 2018-08-08), never labelled: it must not move the window.
    smoke = pd.DataFrame([load_workload("fraud_detection").example_raw_request()])
    serve_history(settings, "fraud-log-window", smoke.assign(tx_datetime=pd.to_datetime(smoke["tx_datetime"])),
                  pd.DataFrame({"transaction_id": smoke["transaction_id"], "fraud": [False]}))

    ctx, first = data_run(settings, spec, "wf-log-1")
    shown = requests[first_days]
    newest_labelled = shown.loc[np.arange(len(shown)) % UNLABELLED_EVERY != 0, "tx_datetime"].max()
    end = newest_labelled.date()  # earlier than a week before the smoke payment
    start = end - timedelta(days=21)
    tags = first.data.tags
    assert tags[names.TAG_DATASET_WINDOW] == f"{start}/{end}"
    in_window = (requests["tx_datetime"] >= pd.Timestamp(start)) & (requests["tx_datetime"] < pd.Timestamp(end))
    positions = np.flatnonzero(first_days.to_numpy() & in_window.to_numpy())
    assert int(tags[names.TAG_DATASET_LOGGED_ROWS]) == len(positions)
    assert int(tags[names.TAG_DATASET_LABELLED_ROWS]) == int((positions % UNLABELLED_EVERY != 0).sum())
    assert tags[names.TAG_DATASET_SNAPSHOT_RUN] == first.info.run_id
    [recorded] = first.inputs.dataset_inputs
    assert recorded.dataset.digest == tags[names.TAG_DATASET_DIGEST] == ctx.outputs[names.OUTPUT_DATASET_DIGEST]
    assert "prediction" in recorded.dataset.source and "model=fraud-log-window" in recorded.dataset.source
    assert {t.key: t.value for t in recorded.tags}[names.TAG_DATASET_WINDOW] == f"{start}/{end}"

    prepared = data_step.load_prepared(ctx)
    # Features read the history before the window (the log starts 6 days before it): the window's first payments
    # already count their card's earlier ones, as the online state does.
    from fraud_detection.features import FEATURE_NAMES

    counts = prepared["x_train"][:200, FEATURE_NAMES.index("customer_id_nb_tx_30day_window")]
    assert len(prepared["x_train"]) + len(prepared["x_valid"]) < int(tags[names.TAG_DATASET_LABELLED_ROWS])
    assert counts.mean() > 5, f"the window's first payments count {counts.mean():.1f} earlier ones: no look-back"
    tested = prepared["test_frame"]["tx_datetime"]
    assert tested.min() >= pd.Timestamp(start + timedelta(days=14)) and tested.max() < pd.Timestamp(end)
    assert len(prepared["x_train"]) and len(prepared["x_test"])

    _, again = data_run(settings, spec, "wf-log-2")  # the same window: the same digest, stored once
    assert again.data.tags[names.TAG_DATASET_DIGEST] == tags[names.TAG_DATASET_DIGEST]
    assert again.data.tags[names.TAG_DATASET_SNAPSHOT_RUN] == first.info.run_id
    client = mlflow.MlflowClient(settings.mlflow_uri)
    assert client.list_artifacts(again.info.run_id) == []
    assert len(data_step.load_prepared(build_context(names.STEP_DATA, spec, "wf-log-2", None, settings))["x_train"])

    serve_history(settings, "fraud-log-window", requests[~first_days], labels[~first_days])
    _, fresh = data_run(settings, spec, "wf-log-3")  # two more days served and labelled: the window moves
    assert fresh.data.tags[names.TAG_DATASET_WINDOW] == f"{start + timedelta(days=2)}/{end + timedelta(days=2)}"
    assert fresh.data.tags[names.TAG_DATASET_DIGEST] != tags[names.TAG_DATASET_DIGEST]
    assert fresh.data.tags[names.TAG_DATASET_SNAPSHOT_RUN] == fresh.info.run_id


def test_a_window_without_enough_labels_fails_the_step_and_records_nothing(
        settings: Settings, history: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    requests, labels = history
    serve_history(settings, "fraud-log-few", requests, labels)
    spec = log_spec("fraud-log-few", min_labelled_rows=10**6)
    with pytest.raises(StepFailed, match=r"fewer than window\.min_labelled_rows"):
        data_run(settings, spec, "wf-few")
    ctx = build_context(names.STEP_DATA, spec, "wf-few", None, settings)
    assert ctx.finished_run() is None and ctx.registry.step_run(ctx.model, "wf-few", names.STEP_DATA, False) is None

    with pytest.raises(StepFailed, match="nothing is logged for fraud-log-never"):
        data_run(settings, log_spec("fraud-log-never"), "wf-never")


def test_a_file_source_is_content_addressed_too(settings: Settings) -> None:
    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    body = json.loads(specs[0].model.model_dump_json())
    body["metadata"]["name"] = "fraud-sim-snapshot"
    body["spec"]["data"]["params"] = {"customers": 100, "terminals": 200, "days": 40, "seed": 0}
    spec = json.dumps(body)
    _, first = data_run(settings, spec, "wf-sim-1")
    _, second = data_run(settings, spec, "wf-sim-2")
    assert second.data.tags[names.TAG_DATASET_SNAPSHOT_RUN] == first.info.run_id
    assert names.TAG_DATASET_WINDOW not in second.data.tags
    assert second.inputs.dataset_inputs[0].dataset.source_type == "local"
