"""Alerts end to end, for real: a Ray head, Prometheus, Alertmanager and ferry's webhook receiver on free loopback
ports in a throwaway home, started as `ferry up` starts them with a team's MLflow server (the test process' own, the
model under a name of this module's own), and a tiny champion served with fault injection allowed. Its drift
reference (ferry.stats.reference) is built from the same synthetic traffic generator the test sends, so healthy
traffic does not drift.

1. Injected errors (the champion's `ferry.fault.error_rate` tag) fire FerryModelErrorBudgetBurn from the
   model's real rules, Alertmanager routes the page through ferry's real routing tree to the receiver, and
   `ferry alerts` shows it.
2. Drifted traffic (transaction amounts far above the reference's) raises the router's `ray_ferry_drift_psi`,
   fires FerryModelDriftHigh, Alertmanager's `retrain` route delivers it to the receiver, and a retraining
   run of the model's rendered Workflow starts in the local runner.

Both print their timings (`ferry.bench.page`, `ferry.bench.drift`; docs/benchmarks/monitoring.md).

Test spec: fraud-detector-lite (as fraud-alerts) with `oncall.severity: page` and `drift_window: 30s` (so the drift
rule holds 30 s and the router's PSI window is 30 s). The rule file is the model's generated one with two changes,
so that the test takes minutes instead of many: the rule groups are evaluated every 5 s (Prometheus' global interval
is 10 s) and the fast-burn error alert (14.4x over 1h and 5m) holds for 15 s instead of 2 m. Scrape interval (10 s),
Ray's metrics export and Alertmanager's routing (group_wait 30 s for pages and for `retrain`) are exactly what
`ferry up` uses.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.integration.test_drift_e2e import prepare_retraining
from tests.integration.test_serving import register_version, serving_spec
from tests.support.local_stack import renamed, restored_environ, stopping
from tests.support.local_stack import wait_for_value as wait_for
from tests.support.serving_fakes import transaction
from typer.testing import CliRunner

from ferry.adapters.prometheus import Prometheus
from ferry.adapters.registry import Registry
from ferry.adapters.tls import tls_context
from ferry.cli.app import app
from ferry.contract import names
from ferry.contract.names import TAG_FAULT_ERROR_RATE
from ferry.local.alerts.store import AlertStore
from ferry.local.engine.state import load_run
from ferry.local.supervisor import procs
from ferry.local.supervisor.services import start_services, use_ray_client_env
from ferry.render import alerts, monitoring
from ferry.serving.deploy import deploy_local
from ferry.settings import Settings
from ferry.spec.models import ModelSpec
from ferry.stats.reference import build_reference
from fraud_detection.workload import FraudDetectionWorkload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(720)]

ROOT = Path(__file__).resolve().parents[2]
PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port", "serve_port",
         "prometheus_port", "alertmanager_port", "receiver_port", "rollout_metrics_port")
SERVICES = ["ray", "mlflow", "prometheus", "alertmanager", "receiver"]
EVAL_INTERVAL, FAST_BURN_HOLD = "5s", "15s"
ERROR_RATE = 0.5  # share of requests the champion fails once injected
RATE = 20.0  # requests per second
PAGE_TIMEOUT_S = 300.0
DRIFT_WINDOW = "30s"
MODEL = "fraud-alerts"  # this module's own name on its test process' shared MLflow server
HEALTHY_AMOUNTS, DRIFTED_AMOUNTS = (0.0, 300.0), (2000.0, 5000.0)


def page_spec() -> ModelSpec:
    spec = serving_spec()
    monitoring_spec = spec.spec.monitoring
    oncall = monitoring_spec.oncall.model_copy(update={"severity": "page"})
    changed = monitoring_spec.model_copy(update={"oncall": oncall, "drift_window": DRIFT_WINDOW})
    return spec.model_copy(update={"spec": spec.spec.model_copy(update={"monitoring": changed})})


def rows(count: int, amounts: tuple[float, float], seed: int) -> list[dict[str, Any]]:
    """Synthetic requests: random customers, amounts uniform in `amounts`, the other features fixed."""
    rng = random.Random(seed)
    return [transaction(customer_id=rng.randrange(10**7), amount=rng.uniform(*amounts)) for _ in range(count)]


def reference_tag(settings: Settings, model: str, version: str) -> str:
    """The champion's drift reference, from healthy synthetic rows, logged as `ferry step register` does."""
    names_ = FraudDetectionWorkload.feature_names
    matrix = np.array([[row[n] for n in names_] for row in rows(2000, HEALTHY_AMOUNTS, seed=99)], dtype=float)
    registry = Registry(settings.mlflow_uri)
    run_id = registry.client.get_model_version(names.registered_model_name(model), version).run_id
    return registry.log_reference(run_id, build_reference(matrix, names_, None))


def fast_rule_file(spec: ModelSpec) -> str:
    groups = alerts.model_rule_groups(spec)
    for group in groups:
        group["interval"] = EVAL_INTERVAL
        for rule in group["rules"]:
            if rule.get("alert") == "FerryModelErrorBudgetBurn" and rule["labels"]["window"] == "1h":
                rule["for"] = FAST_BURN_HOLD
    return monitoring.rule_file(groups)


@dataclass
class Traffic:
    """Paced synthetic traffic on one thread, bounded in time and count."""

    url: str
    amounts: tuple[float, float] = HEALTHY_AMOUNTS
    max_s: float = 420.0
    max_requests: int = 12_000

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.thread = threading.Thread(target=self._run, name="alerts-e2e-load", daemon=True)

    def _run(self) -> None:
        rng = random.Random(0)
        deadline = time.monotonic() + self.max_s
        with httpx.Client(trust_env=False, timeout=5.0, verify=tls_context()) as client:
            while not self.stop.is_set() and time.monotonic() < deadline and len(self.statuses) < self.max_requests:
                payload = transaction(customer_id=rng.randrange(10**7), amount=rng.uniform(*self.amounts))
                try:
                    self.statuses.append(client.post(f"{self.url}/predict/features", json=payload).status_code)
                except httpx.HTTPError:
                    self.statuses.append(0)
                self.stop.wait(1 / RATE)


@dataclass
class Lab:
    settings: Settings
    spec: ModelSpec
    url: str
    champion: str

    @property
    def receiver(self) -> str:
        return f"http://{self.settings.host}:{self.settings.receiver_port}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("alerts-home")
    spec = renamed(page_spec(), MODEL)
    rules = home / monitoring.model_rule_path(spec.name)
    rules.parent.mkdir(parents=True)
    rules.write_text(fast_rule_file(spec))
    settings = Settings(home=home, ray_cpus=1, ready_timeout_s=120, MLFLOW_TRACKING_URI=mlflow_uri,
                        **{port: procs.free_port() for port in PORTS})  # type: ignore[arg-type]
    prepare_retraining(settings, spec)  # what a retraining run executes
    with restored_environ(), stopping(settings):
        states = {s.name: s.state for s in start_services(settings, include=SERVICES)}
        assert states == {name: "external" if name == "mlflow" else "started" for name in SERVICES}, states
        registry = Registry(settings.mlflow_uri)
        registry.ensure_registered_model(spec.name, "test")
        champion = register_version(settings, spec.name, 1)
        registry.tag_version(spec.name, champion, {names.TAG_REFERENCE: reference_tag(settings, spec.name, champion)})
        registry.set_alias(spec.name, names.ALIAS_CHAMPION, champion)
        use_ray_client_env(settings)
        url = deploy_local(settings, spec, poll_interval_s=1.0, timeout_s=240, allow_fault_injection=True)
        yield Lab(settings, spec, url, champion)


def received(lab: Lab, alertname: str) -> dict[str, Any] | None:
    response = httpx.get(f"{lab.receiver}/alerts", params={"model": lab.spec.name, "firing": True},
                         timeout=5, trust_env=False, verify=tls_context())
    return next((a for a in response.json() if a["alertname"] == alertname), None)


def parse(stamp: str) -> float:
    return datetime.strptime(stamp.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z" if "." in stamp
                             else "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC).timestamp()


def test_injected_errors_page_the_receiver_and_ferry_alerts_shows_it(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    traffic = Traffic(lab.url)
    traffic.thread.start()
    try:
        time.sleep(20)  # healthy traffic first: two scrapes of every request series
        assert received(lab, "FerryModelErrorBudgetBurn") is None
        injected = time.time()
        Registry(lab.settings.mlflow_uri).tag_version(lab.spec.name, lab.champion, {TAG_FAULT_ERROR_RATE: ERROR_RATE})
        page = wait_for(lambda: received(lab, "FerryModelErrorBudgetBurn"), PAGE_TIMEOUT_S)
        arrived = time.time()
    finally:
        traffic.stop.set()
        traffic.thread.join(15)
        Registry(lab.settings.mlflow_uri).tag_version(lab.spec.name, lab.champion, {TAG_FAULT_ERROR_RATE: 0})
    assert page is not None, f"no page within {PAGE_TIMEOUT_S:.0f}s; statuses {sorted(set(traffic.statuses))}"
    assert 500 in traffic.statuses and 200 in traffic.statuses
    assert (page["severity"], page["team"], page["labels"]["window"]) == ("page", "risk", "1h")
    assert page["summary"].startswith(f"{lab.spec.name}: error budget burning")
    runbook = page["runbook_url"].removeprefix(names.RUNBOOK_URL_BASE)
    assert (ROOT / "docs" / "runbooks" / runbook).is_file()
    firing = parse(page["starts_at"])  # Prometheus sends startsAt = when the alert began firing (after `for`)
    timings = {"injected_to_firing_s": round(firing - injected, 1),
               "firing_to_received_s": round(arrived - firing, 1),
               "injected_to_received_s": round(arrived - injected, 1),
               "rule_eval_interval": EVAL_INTERVAL, "hold": FAST_BURN_HOLD, "scrape_interval": "10s",
               "group_wait": "30s", "requests": len(traffic.statuses)}
    print(f"\nferry.bench.page {json.dumps(timings)}")

    monkeypatch.setenv("FERRY_HOME", str(lab.settings.home))
    shown = CliRunner().invoke(app, ["alerts", "--firing", "--model", lab.spec.name])
    assert shown.exit_code == 0, shown.output
    assert "FerryModelErrorBudgetBurn" in shown.output and "severity=page" in shown.output
    assert page["runbook_url"] in shown.output
    as_json = json.loads(CliRunner().invoke(app, ["alerts", "--json"]).output)
    assert any(a["fingerprint"] == page["fingerprint"] for a in as_json)

    prom = Prometheus(lab.settings.prometheus_url)
    try:  # Prometheus scrapes the receiver's own counters
        seen = wait_for(lambda: prom.vector('ferry_alerts_received_total{alertname="FerryModelErrorBudgetBurn"}'),
                        60, 2.0)
    finally:
        prom.close()
    assert seen and seen[0][1] >= 1


def test_drifted_traffic_fires_the_drift_alert_and_starts_a_retraining_run(lab: Lab) -> None:
    store = AlertStore.open(lab.settings)

    def started() -> tuple[dict[str, Any], str] | None:
        for alert in store.alerts(model=lab.spec.name, firing=True):
            for trigger in alert.retraining:
                if alert.alertname == "FerryModelDriftHigh" and trigger["result"] == "started":
                    return alert.as_json(), trigger["workflow"]
        return None

    assert started() is None
    traffic = Traffic(lab.url, amounts=DRIFTED_AMOUNTS)
    traffic.thread.start()
    injected = time.time()
    try:
        found = wait_for(started, PAGE_TIMEOUT_S)
        begun = time.time()
    finally:
        traffic.stop.set()
        traffic.thread.join(15)
    assert found, f"no retraining started; alerts: {[(a.alertname, a.retraining) for a in store.alerts()]}"
    alert, workflow = found
    assert alert["labels"]["feature"] == "tx_amount" and alert["severity"] == "ticket"
    assert workflow.startswith(names.retrain_workflow_prefix(lab.spec.name, "drift"))
    run = wait_for(lambda: _running(lab.settings, workflow), 60)
    assert run is not None, "the retraining run never reached a running step"
    assert run["metadata"]["labels"][names.LABEL_TRIGGER] == "drift"
    assert "FerryModelDriftHigh" in run["metadata"]["annotations"][f"{names.DOMAIN}/reason"]
    firing = parse(alert["starts_at"])
    timings = {"injected_to_firing_s": round(firing - injected, 1), "firing_to_run_started_s": round(begun - firing, 1),
               "injected_to_run_started_s": round(begun - injected, 1), "drift_window": DRIFT_WINDOW,
               "rule_eval_interval": EVAL_INTERVAL, "group_wait_retrain": "30s", "requests": len(traffic.statuses)}
    print(f"\nferry.bench.drift {json.dumps(timings)}")
    # Alertmanager sends the same alert again through the ticket route (5 min later): the receiver records it
    # and does not retrain again (tests/unit/local/test_receiver.py); one retraining run exists.
    assert [p.name for p in (lab.settings.state_dir / "retrain").iterdir()] == [workflow]


def _running(settings: Settings, workflow: str) -> dict[str, Any] | None:
    try:
        run = load_run(settings, workflow)
    except Exception:
        return None
    nodes = run["status"].get("nodes", {}).values()
    busy = any(n["type"] == "Pod" and n["phase"] in ("Running", "Succeeded") for n in nodes)
    return run if run["status"]["phase"] in ("Running", "Succeeded") and busy else None
