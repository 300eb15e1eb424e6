"""Drift end to end, for real: Ray and Prometheus (+ Alertmanager) on free loopback ports in a throwaway home, the
test process' MLflow server (the model under a name of this module's own); a champion registered with the drift
reference `ferry step register` stores (deciles of the simulator's training rows and of the model's scores); the
router deployed with `deploy_local`; ferry's rules for the test spec loaded by Prometheus. Live traffic comes from
the workload's simulator: first the same population as training (another seed), then the same with `amount_scale`
raised, the simulator's amount-drift knob. The router's `ray_ferry_drift_psi` must stay low on the first and cross
`drift_psi_alert` on the second, and FerryModelDriftHigh must fire in Prometheus.

Intervals: drift_window 30s (the router's sliding window and the rule's `for`), Prometheus scrape and rule
evaluation 10 s (ferry's local config), Ray's metrics export 10 s (its default). The time from the first
drifted request to the alert firing is printed (see docs/benchmarks/monitoring.md).
`tests/integration/test_monitoring_live.py` uses the same lab.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.models import infer_signature
from tests.support.local_stack import renamed, restored_environ, serve_errors, stopping, wait_for_value

from ferry import workspace
from ferry.adapters.prometheus import Prometheus
from ferry.adapters.registry import Registry
from ferry.adapters.tls import tls_context
from ferry.adapters.workloads import workload_facts
from ferry.contract import metrics as catalogue
from ferry.contract import names
from ferry.local.alerts.retrain import retrain_dir
from ferry.local.alerts.store import AlertStore
from ferry.local.supervisor import procs
from ferry.local.supervisor.services import start_services, use_ray_client_env
from ferry.render import alerts
from ferry.render import monitoring as rendered
from ferry.render import promql as q
from ferry.serving.deploy import deploy_local
from ferry.settings import Settings
from ferry.spec import load_specs
from ferry.spec.models import DataSpec, ModelSpec
from ferry.steps.register import trained_at_tag, training_reference
from fraud_detection.features import FEATURE_NAMES
from fraud_detection.model import FraudMLP, Scorer
from fraud_detection.workload import FraudDetectionWorkload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port", "serve_port",
         "prometheus_port", "alertmanager_port", "rollout_metrics_port", "receiver_port")
POLL_S = 1.0
DRIFT_WINDOW = "30s"
AMOUNT_SCALE = 3.0  # the drifted traffic: every customer's amounts three times as large
BATCH_ROWS = 20
RATE = 3.0  # batch requests per second: 60 rows/s, ~1800 rows in a 30 s window
WORKLOAD = FraudDetectionWorkload()
# With Alertmanager and ferry's receiver the alert goes on to start a retraining run (`ferry up` starts all five).
FULL_SERVICES = ("ray", "mlflow", "prometheus", "alertmanager", "receiver")
MODEL = "fraud-drift"  # this module's own name on its test process' shared MLflow server


def drift_spec() -> ModelSpec:
    """fraud-detector-lite with a 30 s drift window and a replica that fits a 1-CPU Ray head."""
    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector-lite.yaml"])
    model = specs[0].model
    spec = model.spec.model_copy(update={
        "serving": model.spec.serving.model_copy(update={"cpus_per_replica": 0.5}),
        "monitoring": model.spec.monitoring.model_copy(update={"drift_window": DRIFT_WINDOW})})
    return model.model_copy(update={"spec": spec})


# --- data from the workload's simulator ----------------------------------------------------------------

def simulated(spec: ModelSpec, **params: Any) -> tuple[pd.DataFrame, DataSpec]:
    data = spec.spec.data.model_copy(update={"params": {**spec.spec.data.params, **params}})
    with tempfile.TemporaryDirectory() as tmp:
        frame = WORKLOAD.featurize(WORKLOAD.load_data(data, Path(tmp)), data)
    return frame, data


def request_rows(spec: ModelSpec, **params: Any) -> list[dict[str, Any]]:
    """Request bodies of simulated transactions: the rows the workload would train on (`x_train` of its
    split, the rows the reference is built from) of another seed, i.e. the same population, in a fixed
    random order (in time order a 30 s window would see a day or two only: drift of its own). The sticky
    key is random: these tests have no challenger, or one that should see a random half."""
    frame, data = simulated(spec, **params)
    features = WORKLOAD.prepare(frame, data)["x_train"]
    order = np.random.default_rng(0).permutation(len(features))
    keys = np.random.default_rng(1).integers(0, 10**6, size=len(features))
    return [{"customer_id": int(keys[i]), **dict(zip(FEATURE_NAMES, map(float, features[i]), strict=True))}
            for i in order]


# --- registry ------------------------------------------------------------------------------------------

def register_version(settings: Settings, spec: ModelSpec, seed: int = 0) -> str:
    """A small FraudMLP fitted to nothing but the training data's scaling, logged as `ferry step register`
    logs a model (pt2) with the same monitoring tags: the drift reference of the real prepared training
    rows (`training_reference`) and the training time."""
    frame, data = simulated(spec)
    prepared = WORKLOAD.prepare(frame, data)
    torch.manual_seed(seed)
    net = FraudMLP(len(FEATURE_NAMES), hidden=8, dropout=0.0)
    net.set_scaling(prepared["x_train"])
    scorer = Scorer(net).eval()
    reference = training_reference(WORKLOAD, prepared, scorer)
    example = prepared["x_train"][:4]
    with torch.no_grad():
        output = scorer(torch.from_numpy(example)).numpy()
    registry = Registry(settings.mlflow_uri)
    registry.ensure_registered_model(spec.name, "test")
    mlflow.set_tracking_uri(settings.mlflow_uri)
    with mlflow.start_run() as run:
        info = mlflow.pytorch.log_model(scorer, name="model", input_example=example,
                                        signature=infer_signature(example, output),
                                        pip_requirements=["torch"], serialization_format="pt2")
        tags = {names.TAG_ROLLOUT_WEIGHT: "0", names.TAG_TRAINED_AT: trained_at_tag(None),
                names.TAG_REFERENCE: registry.log_reference(run.info.run_id, reference)}
    return str(mlflow.register_model(info.model_uri, names.registered_model_name(spec.name), tags=tags).version)


# --- traffic -------------------------------------------------------------------------------------------

@dataclass
class BatchLoad:
    """Paced `/predict/batch` requests of `batch` rows cycling through `rows` (swap them to change the
    traffic); stops by itself after `max_s` or `max_requests`."""

    url: str
    rows: list[dict[str, Any]]
    rate: float = RATE
    batch: int = BATCH_ROWS
    max_s: float = 300.0
    max_requests: int = 2_000
    statuses: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the first few answers other than 200

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift-load", daemon=True)

    def __enter__(self) -> BatchLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        started, offset = time.monotonic(), 0
        with httpx.Client(trust_env=False, timeout=10.0, verify=tls_context()) as client:
            for index in range(self.max_requests):
                if self._stop.wait(max(0.0, started + index / self.rate - time.monotonic())):
                    return
                if time.monotonic() - started > self.max_s:
                    return
                rows = self.rows
                body = [rows[(offset + i) % len(rows)] for i in range(self.batch)]
                offset += self.batch
                try:
                    answer = client.post(f"{self.url}/predict/features/batch", json=body)
                    status, what = answer.status_code, answer.text[:300]
                except httpx.HTTPError as exc:
                    status, what = 0, repr(exc)
                self.statuses.append(status)
                if status != 200 and len(self.failures) < 5:
                    self.failures.append(f"request {index}: {status} {what}")


# --- the lab -------------------------------------------------------------------------------------------

@dataclass
class Lab:
    settings: Settings
    spec: ModelSpec
    url: str
    champion: str
    prom: Prometheus

    @property
    def name(self) -> str:
        return self.spec.name

    def psi(self) -> dict[str, float]:
        query = f"max by (feature) ({q.sel(catalogue.DRIFT_PSI.series, q.eq('model', self.name))})"
        return {labels["feature"]: value for labels, value in self.prom.vector(query)}

    def alert_state(self, alert: str) -> str | None:
        found = self.prom.vector(q.sel(catalogue.ALERTS.series, q.eq("alertname", alert), q.eq("model", self.name)))
        states = {labels["alertstate"] for labels, _ in found}
        return "firing" if "firing" in states else next(iter(states), None)


def write_rules(settings: Settings, spec: ModelSpec) -> None:
    """The test spec's rules and the platform rules where local Prometheus loads them (RULE_FILE_GLOBS)."""
    model_rules = settings.home / rendered.model_rule_path(spec.name)
    model_rules.parent.mkdir(parents=True, exist_ok=True)
    model_rules.write_text(rendered.rule_file(alerts.model_rule_groups(spec)))
    platform = settings.home / rendered.PLATFORM_RULES
    platform.parent.mkdir(parents=True, exist_ok=True)
    platform.write_text(rendered.rule_file(alerts.platform_rule_groups()))


def lab_settings(home: Path, mlflow_uri: str) -> Settings:
    """Free ports for every service but MLflow: the lab uses its test process' server (`mlflow_uri`)."""
    ports = {name: procs.free_port() for name in PORTS}
    return Settings(home=home, ray_cpus=1, ready_timeout_s=120, MLFLOW_TRACKING_URI=mlflow_uri,
                    **ports)  # type: ignore[arg-type]


def prepare_retraining(settings: Settings, spec: ModelSpec) -> None:
    """The checkout a retraining run needs in the lab's home: the spec's file, under the lab's name for the
    model, and its rendered local Workflow."""
    models = settings.home / "gitops" / "models"
    models.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_load((ROOT / "gitops/models/fraud-detector-lite.yaml").read_text())
    body["metadata"]["name"] = spec.name
    (models / f"{spec.name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    workspace.render(settings.home, "local", workloads=workload_facts())


def start_lab(settings: Settings, spec: ModelSpec, services: tuple[str, ...] = ("ray", "mlflow", "prometheus"),
              allow_fault_injection: bool = False) -> Lab:
    write_rules(settings, spec)
    states = {s.name: s.state for s in start_services(settings, include=list(services))}
    assert states == {name: "external" if name == "mlflow" else "started" for name in services}, states
    champion = register_version(settings, spec)
    registry = Registry(settings.mlflow_uri)
    registry.set_alias(spec.name, names.ALIAS_CHAMPION, champion)
    registry.tag_version(spec.name, champion, {names.TAG_ROLLOUT_STATE: "promoted"})
    use_ray_client_env(settings)
    url = deploy_local(settings, spec, poll_interval_s=POLL_S, timeout_s=240,
                       allow_fault_injection=allow_fault_injection)
    return Lab(settings, spec, url, champion, Prometheus(settings.prometheus_url))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> Iterator[Lab]:
    settings = lab_settings(tmp_path_factory.mktemp("drift-home"), mlflow_uri)
    spec = renamed(drift_spec(), MODEL)
    prepare_retraining(settings, spec)
    with restored_environ(), stopping(settings):
        yield start_lab(settings, spec, services=FULL_SERVICES)


def wait_for(condition: Any, timeout_s: float, every_s: float = 1.0) -> float | None:
    """Seconds until `condition()` held (bounded), None if it never did."""
    started = time.monotonic()
    return time.monotonic() - started if procs.wait_until(condition, timeout_s, every_s) else None


def test_simulated_amount_drift_fires_the_drift_alert(lab: Lab) -> None:
    threshold = lab.spec.spec.monitoring.drift_psi_alert
    same = request_rows(lab.spec, seed=2)
    drifted = request_rows(lab.spec, seed=2, amount_scale=AMOUNT_SCALE)
    assert len(same) > 1000 and len(drifted) == len(same)
    features = {*FEATURE_NAMES, "score"}
    with BatchLoad(lab.url, same) as load:
        # undrifted traffic: every feature and the score get a PSI, all of them low
        assert wait_for(lambda: set(lab.psi()) == features, 120), lab.psi()
        time.sleep(15)  # one more export and scrape of a full window
        before = lab.psi()
        assert max(before.values()) < threshold, json.dumps(before)
        # Undrifted traffic never fires the alert. It may still be pending from an earlier rule evaluation (seen
        # once, in a CI run, with every PSI below the limit at this scrape): the rule's `for` (drift_window) is
        # what keeps a moment over the limit from paging, so it must clear, never fire.
        states: list[str | None] = []
        cleared = wait_for(lambda: states.append(lab.alert_state("FerryModelDriftHigh")) or states[-1] is None,
                           60, 1.0)
        assert cleared is not None and "firing" not in states, (states, json.dumps(lab.psi()))
        load.rows = drifted
        switched = time.monotonic()
        visible = wait_for(lambda: max(lab.psi().values()) > threshold, 120, 0.5)
        fired = wait_for(lambda: lab.alert_state("FerryModelDriftHigh") == "firing", 180, 0.5)
    after = lab.psi()
    total = time.monotonic() - switched if fired is not None else None
    print(f"PSI before {json.dumps({k: round(v, 3) for k, v in sorted(before.items())})}")
    print(f"PSI after  {json.dumps({k: round(v, 3) for k, v in sorted(after.items())})}")
    print(f"drifted traffic → PSI over {threshold} in Prometheus after {visible}s; "
          f"FerryModelDriftHigh firing after {total}s (window and for: {DRIFT_WINDOW})")
    assert visible is not None, after
    assert fired is not None, (after, lab.alert_state("FerryModelDriftHigh"))
    assert after["tx_amount"] > threshold and after["customer_id_avg_amount_30day_window"] > threshold
    assert after["tx_during_night"] < threshold  # the knob moved amounts only
    assert load.statuses and set(load.statuses) == {200}, (load.failures, serve_errors(lab.settings))
    firing = lab.prom.vector(q.sel(catalogue.ALERTS.series, q.eq("alertname", names.ALERT_DRIFT_HIGH),
                                   q.eq("alertstate", "firing")))
    labels = firing[0][0]
    assert labels["model"] == lab.name and labels["team"] == "risk" and labels["severity"] == "ticket"
    assert labels["feature"] in after and after[labels["feature"]] > threshold
    # Prometheus → Alertmanager (ferry's routing tree, `retrain` route) → ferry's receiver → a retraining run
    workflow = wait_for_value(lambda: retraining_started(lab), 150, 0.5)
    started_s = time.monotonic() - switched
    assert workflow is not None, [a.retraining for a in AlertStore.open(lab.settings).alerts()]
    assert workflow.startswith(names.retrain_workflow_prefix(lab.name, "drift"))
    assert retrain_dir(lab.settings, workflow).is_dir()  # the run's own copy of the rendered Workflow
    figures = {"drifted_traffic_to_psi_visible_s": round(visible, 1),
               "drifted_traffic_to_alert_firing_s": round(total or 0, 1),
               "drifted_traffic_to_retraining_started_s": round(started_s, 1)}
    print(f"ferry.bench.drift {json.dumps(figures)}")


def retraining_started(lab: Lab) -> str | None:
    """The workflow of a retraining run the receiver started for a real FerryModelDriftHigh of this model."""
    for alert in AlertStore.open(lab.settings).alerts(model=lab.name, firing=True):
        if alert.alertname == "FerryModelDriftHigh":
            for trigger in alert.retraining:
                if trigger["result"] == "started" and trigger.get("workflow"):
                    return str(trigger["workflow"])
    return None


def test_champion_training_time_is_exported(lab: Lab) -> None:
    query = q.sel(catalogue.LAST_TRAINED.series, q.eq("model", lab.name))
    assert wait_for(lambda: bool(lab.prom.vector(query)), 60)
    [(_, value)] = [(labels, value) for labels, value in lab.prom.vector(f"max({query})")]
    tags = Registry(lab.settings.mlflow_uri).client.get_model_version(
        names.registered_model_name(lab.name), lab.champion).tags
    assert value == pytest.approx(pd.Timestamp(tags[names.TAG_TRAINED_AT]).timestamp())
    assert 0 <= time.time() - value < 3600
    assert np.isfinite(value)
