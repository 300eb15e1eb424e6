"""A retraining run for real: `ferry up` trains a tiny spec once, then `start_retraining` (what a drift alert
makes the receiver call, and `ferry submit --retrain`) runs the same spec hash again under a new run name.

The spec reads a Parquet file, so the test decides what the data is. On new data (a different file) the retrain
registers a second version, compares it with the champion and puts it through the canary. No traffic reaches the
model here, so the canary has no evidence and, after `hold_timeout`, rolls the challenger back: the point is that a
retrained challenger takes the normal rollout path, never a shortcut, and leaves no challenger behind (a spec change
takes the same path: the stale challenger of test_closed_loop_e2e.py). On the same data again (a second trigger for
one window) the run's identity, spec hash plus dataset digest, is one that already trained: training is
skipped and nothing is registered.

The spec has no tune block, so these runs train without tuning first: tune is skipped by the same `when` as train
(tests/golden/test_render_contract.py holds both), test_pipeline.py's first run tunes, and CI runs on a machine
that the integration modules keep busy, where two tuning runs here cost as much CPU as a small module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.test_pipeline import write_spec
from tests.support.local_stack import stopping

from ferry.adapters.registry import Registry
from ferry.contract import names
from ferry.local import reconcile
from ferry.local.alerts.retrain import RetrainingBusy, start_retraining
from ferry.local.engine.state import load_run
from ferry.local.supervisor import procs
from ferry.local.supervisor.services import start_services
from ferry.rollout.lineage import lineage
from ferry.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# Every service `ferry up` may start: one left on its default port collides with a developer's own `ferry up`.
PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port", "serve_port",
         "prometheus_port", "alertmanager_port", "receiver_port", "rollout_metrics_port", "redis_port")
MODEL = "tiny-retrain"
# The retrained version must reach the canary whatever its score (min_delta -1), and a canary without
# traffic gives up quickly (3 s checks, 12 s hold timeout).
FAST_CANARY = {"min_delta: 0.0": "min_delta: -1.0", "interval: 30s": "interval: 3s",
               "hold_timeout: 10m": "hold_timeout: 12s"}
PAYMENTS = "payments.parquet"
FROM_FILE = {"source: simulator\n    params: {customers: 150, terminals: 300, days: 40, seed: 0}":
             f"source: parquet\n    path: {PAYMENTS}"}


def write_payments(settings: Settings, seed: int) -> None:
    from fraud_detection.simulator import SimulatorParams, simulate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    simulate(SimulatorParams(customers=150, terminals=300, days=40, seed=seed)).to_parquet(
        settings.data_dir / PAYMENTS, index=False)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("retrain-home")
    (home / "gitops/models").mkdir(parents=True)
    write_spec(home, MODEL, tune=False, **FAST_CANARY, **FROM_FILE)
    # The session's MLflow (tests/integration/conftest.py), as a team's server would be: `ferry up`, the
    # retraining run and their steps use it and start none (its model name is this module's own).
    settings = Settings(home=home, ray_cpus=2, ready_timeout_s=120, MLFLOW_TRACKING_URI=mlflow_uri,
                        **{f: procs.free_port() for f in PORTS})  # type: ignore[arg-type]
    write_payments(settings, seed=0)
    with stopping(settings):
        states = {s.name: s.state for s in start_services(settings, include=["ray", "mlflow"])}
        assert states == {"ray": "started", "mlflow": "external"}, states
        yield settings


def nodes(settings: Settings, workflow: str) -> dict[str, dict[str, Any]]:
    """The run's steps by name: phase, message and output parameters."""
    return {n["displayName"]: {"phase": n["phase"], "message": n.get("message", ""),
                               **{p["name"]: p.get("value") for p in (n.get("outputs") or {}).get("parameters", [])}}
            for n in load_run(settings, workflow)["status"]["nodes"].values() if "(" not in n["displayName"]}


def test_retraining_on_new_data_trains_the_same_spec_again_and_goes_through_the_canary(settings: Settings) -> None:
    [first] = reconcile.up(settings, [MODEL]).models
    assert first.phase == "Succeeded", first.message
    registry = Registry(settings.mlflow_uri)
    assert registry.alias(MODEL, names.ALIAS_CHAMPION).version == "1"
    assert reconcile.up(settings, [MODEL]).models[0].action == "up-to-date"  # the spec hash is registered

    write_payments(settings, seed=1)  # what a window of new traffic is to a log spec: a new dataset
    started: list[str] = []
    result = start_retraining(settings, MODEL, "test: drift on tx_amount", trigger="drift", on_started=started.append)
    assert result.phase == "Succeeded", result.message
    assert started == [result.workflow] and result.workflow.startswith(f"{MODEL}-drift-")
    versions = {v.version: v for v in registry.client.search_model_versions(f"name = '{MODEL}'")}
    assert set(versions) == {"1", "2"}
    assert versions["2"].tags[names.TAG_SPEC_HASH] == versions["1"].tags[names.TAG_SPEC_HASH] == first.spec_hash
    assert versions["2"].tags[names.TAG_WORKFLOW] == result.workflow
    evaluate = registry.step_run(MODEL, result.workflow, "evaluate")
    assert evaluate.data.tags[names.TAG_EVALUATE_CHAMPION_VERSION] == "1"
    outputs = nodes(settings, result.workflow)
    assert outputs["data"]["fresh"] == "true" and outputs["data"]["dataset-digest"] != versions["1"].tags[
        names.TAG_DATASET_DIGEST]
    assert outputs["rollout"]["decision"] == "rolled-back" and "no evidence" in outputs["rollout"]["reason"]
    assert registry.alias(MODEL, names.ALIAS_CHAMPION).version == "1"
    assert registry.alias(MODEL, names.ALIAS_CHALLENGER) is None
    assert versions["2"].tags[names.TAG_ROLLOUT_STATE] == "rolled-back"
    assert versions["2"].tags[names.TAG_ROLLOUT_WEIGHT] == "0"
    found = lineage(registry, MODEL, "2")
    assert found.ancestors == ("1",) and dict(found.facts)["pipeline run"] == result.workflow
    rendered = (settings.home / "gitops/rendered/local" / MODEL / "workflow.yaml").read_text()
    assert f"name: {first.workflow}" in rendered and "drift" not in rendered  # the committed run is untouched


def test_a_second_trigger_on_the_same_data_trains_nothing(settings: Settings) -> None:
    registry = Registry(settings.mlflow_uri)
    before = {v.version for v in registry.client.search_model_versions(f"name = '{MODEL}'")}
    assert before == {"1", "2"}, "runs after the test that retrains on new data"
    [trained_by] = [v.tags[names.TAG_WORKFLOW] for v in registry.client.search_model_versions(f"name = '{MODEL}'")
                    if v.version == "2"]

    result = start_retraining(settings, MODEL, "test: the same alert again", trigger="drift")
    assert result.phase == "Succeeded", result.message
    steps = nodes(settings, result.workflow)
    assert steps["data"]["fresh"] == "false"
    assert names.STEP_TUNE not in steps and steps[names.STEP_TRAIN]["phase"] == "Skipped"
    assert steps["evaluate"]["passed"] == "false"
    assert f"{trained_by} already trained this spec on this dataset (it registered version 2)" in steps[
        "evaluate"]["reason"]
    assert steps["register"]["phase"] == steps["rollout"]["phase"] == "Skipped"
    assert {v.version for v in registry.client.search_model_versions(f"name = '{MODEL}'")} == before
    data_run = registry.step_run(MODEL, result.workflow, names.STEP_DATA)
    assert data_run.data.tags[names.TAG_DATASET_TRAINED_BY] == trained_by


def test_retraining_refuses_while_the_models_pipeline_runs(settings: Settings) -> None:
    from ferry.local.supervisor import locks

    with locks.exclusive(locks.lock_path(settings, names.mutex_name(MODEL)), what="test", timeout_s=0), \
            pytest.raises(RetrainingBusy):
        start_retraining(settings, MODEL, "second")
