"""The local webhook receiver in-process (FastAPI TestClient): payload validation, the alert record,
`ferry_pipeline_runs_total` from run records, and the drift -> retraining decisions.

Retraining itself is replaced by a recording function here; tests/unit/local/test_retrain.py runs the
real `start_retraining` through the local runner, and tests/integration/test_alerts_e2e.py does it all with
real Prometheus and Alertmanager.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ferry.local.alerts.receiver import build_app
from ferry.local.alerts.retrain import RetrainingBusy, RetrainResult
from ferry.local.alerts.store import AlertStore, db_path
from ferry.settings import Settings

T0 = "2026-11-26T15:00:00.123Z"


def alert(name: str = "FerryModelErrorBudgetBurn", status: str = "firing", fingerprint: str = "a1b2c3",
          starts: str = T0, **labels: str) -> dict[str, Any]:
    return {"status": status,
            "labels": {"alertname": name, "severity": "page", "team": "risk", "model": "fraud", **labels},
            "annotations": {"summary": f"{name} summary", "description": "what happened",
                            "runbook_url": "https://example.invalid/runbook.md"},
            "startsAt": starts,
            "endsAt": "2026-11-26T15:10:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": fingerprint}


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {"version": "4", "groupKey": '{}:{alertname="x"}', "truncatedAlerts": 0, "status": status,
            "receiver": "page", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093", "alerts": list(alerts)}


class FakeRetrain:
    """Records calls; each call blocks until `release` is set, like a run that takes a while."""

    def __init__(self, busy: bool = False) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.release = threading.Event()
        self.busy = busy

    def __call__(self, settings: Settings, model: str, reason: str, *, trigger: str, on_started: Any) -> RetrainResult:
        self.calls.append((model, reason, trigger))
        if self.busy:
            raise RetrainingBusy(f"a pipeline run of {model} is active")
        workflow = f"{model}-drift-{len(self.calls)}"
        on_started(workflow)
        self.release.wait(10)
        return RetrainResult(model, workflow, "Succeeded", "")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


@pytest.fixture
def retrain() -> Iterator[FakeRetrain]:
    fake = FakeRetrain()
    yield fake
    fake.release.set()


@pytest.fixture
def client(settings: Settings, retrain: FakeRetrain) -> Iterator[TestClient]:
    with TestClient(build_app(settings, retrain=retrain)) as test_client:
        yield test_client


def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def metric(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = client.get("/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


# --- validation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "field"), [
    ({"version": "3"}, "version"),
    ({"alerts": []}, "alerts"),
    ({"status": "burning"}, "status"),
    ({"receiver": None}, "receiver"),
])
def test_bad_payloads_are_422_naming_the_field(client: TestClient, change: dict[str, Any], field: str) -> None:
    response = client.post("/alerts", json={**payload(alert()), **change})
    assert response.status_code == 422
    assert field in json.dumps(response.json()["detail"]) and "webhook payload" in response.json()["hint"]


def test_alert_without_alertname_or_fingerprint_is_rejected(client: TestClient) -> None:
    nameless = alert()
    del nameless["labels"]["alertname"]
    assert "alertname" in client.post("/alerts", json=payload(nameless)).text
    assert client.post("/alerts", json=payload({**alert(), "fingerprint": ""})).status_code == 422
    assert client.post("/alerts", content=b"not json", headers={"content-type": "application/json"}).status_code == 422
    rejected = metric(client, "ferry_alert_notifications_total")
    assert rejected[(("result", "rejected"),)] == 3


def test_oversized_body_is_413(client: TestClient) -> None:
    response = client.post("/alerts", content=b"{" + b" " * (5 * 1024 * 1024) + b"}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


# --- recording --------------------------------------------------------------------------------------------

def test_firing_then_resolved_is_one_alert_with_its_history(client: TestClient, settings: Settings) -> None:
    assert client.post("/alerts", json=payload(alert())).json() == {"recorded": 1, "retraining": []}
    client.post("/alerts", json=payload(alert()))  # repeat_interval
    [firing] = AlertStore.open(settings).alerts(firing=True)
    assert (firing.alertname, firing.status, firing.severity, firing.team, firing.model) == (
        "FerryModelErrorBudgetBurn", "firing", "page", "risk", "fraud")
    assert firing.notifications == 2 and firing.ends_at is None and firing.starts_at == T0
    assert firing.runbook_url == "https://example.invalid/runbook.md" and firing.summary.endswith("summary")
    client.post("/alerts", json=payload(alert(status="resolved"), status="resolved"))
    store = AlertStore.open(settings)
    assert store.alerts(firing=True) == []
    [resolved] = store.alerts()
    assert resolved.status == "resolved" and resolved.ends_at == "2026-11-26T15:10:00Z"
    assert db_path(settings).is_file()
    counts = metric(client, "ferry_alerts_received_total")
    assert counts[(("alertname", "FerryModelErrorBudgetBurn"), ("status", "firing"))] == 2


def test_filters_by_model_and_state(client: TestClient, settings: Settings) -> None:
    client.post("/alerts", json=payload(alert(fingerprint="f1"), alert(fingerprint="f2", model="other")))
    client.post("/alerts", json=payload(alert(fingerprint="f3", status="resolved", model="other")))
    store = AlertStore.open(settings)
    assert {a.fingerprint for a in store.alerts(model="other")} == {"f2", "f3"}
    assert {a.fingerprint for a in store.alerts(model="other", firing=True)} == {"f2"}
    assert [a["fingerprint"] for a in client.get("/alerts", params={"model": "fraud"}).json()] == ["f1"]


# --- ferry_pipeline_runs_total ----------------------------------------------------------------------------

def write_run(settings: Settings, name: str, model: str, phase: str, finished: str | None) -> None:
    path = settings.runs_dir / name / "workflow.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metadata": {"name": name, "labels": {"ferry.dev/model": model}},
                                "status": {"phase": phase, "startedAt": "2026-11-26T14:00:00Z",
                                           "finishedAt": finished}}))


def runs_total(client: TestClient) -> dict[tuple[str, str], float]:
    return {(dict(k)["model"], dict(k)["phase"]): v for k, v in metric(client, "ferry_pipeline_runs_total").items()}


def test_pipeline_runs_counts_each_completion_once_and_never_goes_down(client: TestClient,
                                                                       settings: Settings) -> None:
    write_run(settings, "old-1", "fraud", "Failed", "2020-01-01T00:00:00Z")  # before the store existed
    assert runs_total(client) == {("fraud", "Succeeded"): 0, ("fraud", "Failed"): 0, ("fraud", "Error"): 0}
    write_run(settings, "fraud-1", "fraud", "Running", None)
    write_run(settings, "lite-1", "lite", "Error", "2999-01-01T00:00:00Z")
    assert runs_total(client)[("lite", "Error")] == 1 and runs_total(client)[("fraud", "Failed")] == 0
    write_run(settings, "fraud-1", "fraud", "Failed", "2999-01-01T00:00:00Z")
    assert runs_total(client)[("fraud", "Failed")] == 1
    write_run(settings, "fraud-1", "fraud", "Succeeded", "2999-01-01T00:05:00Z")  # resumed and finished
    totals = runs_total(client)
    assert totals[("fraud", "Failed")] == 1 and totals[("fraud", "Succeeded")] == 1
    assert runs_total(client) == totals  # scraping again counts nothing twice


# --- drift -> retraining ----------------------------------------------------------------------------------

def drift(fingerprint: str = "d1", starts: str = T0, feature: str = "amount", **extra: str) -> dict[str, Any]:
    return alert("FerryModelDriftHigh", fingerprint=fingerprint, starts=starts, feature=feature,
                 severity="ticket", **extra)


def test_firing_drift_starts_one_retraining_and_duplicates_are_skipped(client: TestClient, settings: Settings,
                                                                      retrain: FakeRetrain) -> None:
    first = client.post("/alerts", json=payload(drift(), drift("d2", feature="hour"))).json()
    assert first["retraining"] == [{"model": "fraud", "result": "starting"}]
    wait_for(lambda: len(retrain.calls) == 1)
    model, reason, trigger = retrain.calls[0]
    assert (model, trigger) == ("fraud", "drift") and "FerryModelDriftHigh" in reason and "amount, hour" in reason
    again = client.post("/alerts", json=payload(drift("d3", starts="2026-11-26T15:05:00Z"))).json()
    assert again["retraining"][0]["result"] == "skipped" and "fraud-drift-1" in again["retraining"][0]["message"]
    retrain.release.set()
    store = AlertStore.open(settings)
    wait_for(lambda: store.alerts(model="fraud")[-1].retraining[0]["phase"] == "Succeeded")
    repeat = client.post("/alerts", json=payload(drift())).json()  # Alertmanager's repeat of the same alert
    assert repeat["retraining"][0]["result"] == "skipped" and "already started" in repeat["retraining"][0]["message"]
    assert len(retrain.calls) == 1
    [record] = [a for a in store.alerts() if a.fingerprint == "d1"]
    assert record.retraining[0]["workflow"] == "fraud-drift-1" and record.retraining[0]["result"] == "started"
    triggers = {dict(k)["result"]: v for k, v in metric(client, "ferry_retraining_triggers_total").items()}
    assert triggers == {"started": 1, "skipped": 2}


def test_new_drift_episode_retrains_again(client: TestClient, retrain: FakeRetrain) -> None:
    retrain.release.set()
    client.post("/alerts", json=payload(drift()))
    wait_for(lambda: len(retrain.calls) == 1)
    wait_for(lambda: client.post("/alerts", json=payload(drift("d1", starts="2026-11-27T09:00:00Z")))
             .json()["retraining"][0]["result"] == "starting")
    wait_for(lambda: len(retrain.calls) == 2)


def test_only_firing_drift_with_a_model_retrains(client: TestClient, retrain: FakeRetrain) -> None:
    resolved = drift(status="resolved")
    nameless = drift("d9")
    del nameless["labels"]["model"]
    for body in (payload(resolved, status="resolved"), payload(nameless), payload(alert())):
        assert client.post("/alerts", json=body).json()["retraining"] == []
    assert retrain.calls == []


def test_busy_model_is_recorded_as_skipped(settings: Settings) -> None:
    busy = FakeRetrain(busy=True)
    with TestClient(build_app(settings, retrain=busy)) as client:
        client.post("/alerts", json=payload(drift()))
        store = AlertStore.open(settings)
        wait_for(lambda: store.alerts()[0].retraining and store.alerts()[0].retraining[0]["result"] == "skipped")
        assert "is active" in store.alerts()[0].retraining[0]["message"]


def test_ready_and_metrics_content_type(client: TestClient) -> None:
    assert client.get("/-/ready").json() == {"status": "ready"}
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_receiver_is_a_local_service_scraped_by_prometheus(tmp_path: Path) -> None:
    import sys

    import yaml

    from ferry.local.supervisor import service_defs

    settings = Settings(home=tmp_path, receiver_port=19095)
    assert "receiver" in service_defs.SERVICES and "receiver" not in service_defs.OPTIONAL
    spec = service_defs.build_spec("receiver", settings, service_defs.SERVICES)
    assert spec.argv == [sys.executable, "-m", "ferry.local.alerts.receiver"]
    assert spec.ready_url == "http://127.0.0.1:19095/-/ready" and spec.main_port == 19095
    config = yaml.safe_load(service_defs.prometheus_config(settings, with_alertmanager=True))
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "ferry-receiver"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:19095"]}]
    hooks = yaml.safe_load(service_defs.alertmanager_config(settings))["receivers"]
    assert {h["url"] for r in hooks for h in r.get("webhook_configs", [])} == {"http://127.0.0.1:19095/alerts"}


def test_a_new_receiver_marks_runs_its_predecessor_left_unfinished(settings: Settings, retrain: FakeRetrain) -> None:
    store = AlertStore.open(settings)
    with TestClient(build_app(settings, retrain=retrain)) as client:
        client.post("/alerts", json=payload(drift()))
        # The fake counts the call before it reports the run started: wait for the record, not the count.
        wait_for(lambda: [t["phase"] for a in store.alerts() for t in a.retraining] == ["Running"])
    assert store.alerts()[0].retraining[0]["phase"] == "Running"  # the first receiver "died" mid-run
    build_app(settings, retrain=retrain)
    [trigger] = store.alerts()[0].retraining
    assert trigger["phase"] == "Interrupted" and "receiver stopped" in trigger["message"]
