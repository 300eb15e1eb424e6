"""Drift → retraining on a cluster: the Argo Events objects, the Alertmanager route that feeds them and the
Sensor's RBAC, checked strictly against the vendored schemas and against each other."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.binaries import system_command
from tests.support.kube_schemas import validate_object
from tests.unit.local.test_receiver import drift, payload

from ferry.contract import names
from ferry.render import alerting, argocd, events
from ferry.render.bundle import render_objects
from ferry.render.profiles import PROFILES
from ferry.spec import load_specs

ROOT = Path(__file__).resolve().parents[3]
PROD = PROFILES["prod"]
DEPLOY = ROOT / "platform" / "deploy"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    specs, errors = load_specs([ROOT / "gitops" / "models"])
    assert not errors
    return render_objects([s.model for s in specs], "prod")


def sensors(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {path.split("/")[0]: doc for path, docs in rendered.items() for doc in docs if doc["kind"] == "Sensor"}


def trigger_workflow(sensor: dict[str, Any]) -> dict[str, Any]:
    [trigger] = sensor["spec"]["triggers"]
    return dict(trigger["template"]["k8s"]["source"]["resource"])


def test_every_event_object_and_the_embedded_workflow_validate_strictly(rendered: dict[str, Any]) -> None:
    found = [doc for docs in rendered.values() for doc in docs if doc["kind"] in ("Sensor", "EventSource", "EventBus")]
    assert {d["kind"] for d in found} == {"Sensor", "EventSource", "EventBus"}
    for doc in found:
        assert validate_object(doc) == [], doc["metadata"]["name"]
    for sensor in sensors(rendered).values():
        # The schema types a trigger's resource as any object: validate the Workflow on its own.
        assert validate_object(trigger_workflow(sensor)) == []


def test_strictness_catches_a_typo_in_a_sensor(rendered: dict[str, Any]) -> None:
    sensor = next(iter(sensors(rendered).values()))
    broken = yaml.safe_load(yaml.safe_dump(sensor))
    broken["spec"]["dependencies"][0]["filter"] = broken["spec"]["dependencies"][0].pop("filters")
    assert any("unknown field 'filter'" in e for e in validate_object(broken))


def test_each_model_has_a_sensor_that_submits_its_template_with_trigger_drift(rendered: dict[str, Any]) -> None:
    found = sensors(rendered)
    assert set(found) == {p.split("/")[0] for p in rendered if not p.startswith(argocd.ARGOCD_DIR)}
    for model, sensor in found.items():
        [workflow_doc] = rendered[f"{model}/workflow.yaml"]
        [template] = rendered[f"{model}/workflowtemplate.yaml"]
        submitted = trigger_workflow(sensor)
        assert submitted["spec"]["workflowTemplateRef"] == workflow_doc["spec"]["workflowTemplateRef"]
        assert submitted["metadata"]["generateName"] == f"{model}-drift-" and "name" not in submitted["metadata"]
        args = {p["name"]: p["value"] for p in submitted["spec"]["arguments"]["parameters"]}
        assert args == {"spec-hash": workflow_doc["metadata"]["labels"][names.LABEL_SPEC_HASH], "trigger": "drift"}
        [trigger_param] = [p for p in template["spec"]["arguments"]["parameters"] if p["name"] == "trigger"]
        assert args["trigger"] in trigger_param["enum"] == list(names.TRIGGERS)
        assert "ttlStrategy" not in submitted["spec"]
        [trigger] = sensor["spec"]["triggers"]
        assert trigger["template"]["k8s"]["operation"] == "create"
        assert trigger["rateLimit"] == {"unit": "Hour", "requestsPerUnit": 1}
        assert sensor["spec"]["template"]["serviceAccountName"] == events.SENSOR_SERVICE_ACCOUNT
        assert sensor["spec"]["template"]["container"]["securityContext"]["runAsNonRoot"] is True


def gjson(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def matches(sensor: dict[str, Any], event: dict[str, Any]) -> bool:
    """The Sensor's data filters (all string equality, ANDed) applied to a webhook event as Argo Events
    sees it: {"header": ..., "body": <the JSON Alertmanager posted>}."""
    [dependency] = sensor["spec"]["dependencies"]
    return all(gjson(event, f["path"]) in f["value"] for f in dependency["filters"]["data"])


def notification(model: str, status: str = "firing", alertname: str = "FerryModelDriftHigh") -> dict[str, Any]:
    """A notification as grouped by ferry's routing tree (team, alertname, model): common labels name them."""
    body = payload(drift(model=model, status=status), status=status)
    body["commonLabels"] = {"alertname": alertname, "model": model, "team": "risk", "severity": "ticket"}
    return {"header": {"Content-Type": ["application/json"]}, "body": body}


def test_sensor_filters_select_only_firing_drift_of_its_own_model(rendered: dict[str, Any]) -> None:
    found = sensors(rendered)
    for model, sensor in found.items():
        assert matches(sensor, notification(model))
        assert not matches(sensor, notification(model, status="resolved"))
        assert not matches(sensor, notification(model, alertname="FerryModelErrorBudgetBurn"))
        for other in set(found) - {model}:
            assert not matches(sensor, notification(other))
        [dependency] = sensor["spec"]["dependencies"]
        assert (dependency["eventSourceName"], dependency["eventName"]) == (events.EVENT_SOURCE, events.EVENT_NAME)


def test_alertmanager_posts_drift_to_the_event_source_service(rendered: dict[str, Any]) -> None:
    [bus, source] = rendered[f"{argocd.ARGOCD_DIR}/events.yaml"]
    assert (bus["kind"], source["kind"]) == ("EventBus", "EventSource")
    assert source["spec"]["eventBusName"] == bus["metadata"]["name"] == events.EVENT_BUS
    hook = source["spec"]["webhook"][events.EVENT_NAME]
    [port] = source["spec"]["service"]["ports"]
    assert int(hook["port"]) == port["port"] == port["targetPort"] and hook["method"] == "POST"
    # Argo Events names the Service of an EventSource `<name>-eventsource-svc`.
    expected = (f"http://{source['metadata']['name']}-eventsource-svc.{source['metadata']['namespace']}"
                f".svc.cluster.local:{port['port']}{hook['endpoint']}")
    config = alerting.cluster_config()
    [receiver] = [r for r in config["receivers"] if r["name"] == alerting.RETRAIN_RECEIVER]
    assert receiver["webhook_configs"] == [{"url": expected, "send_resolved": False}]
    [route] = [r for r in config["route"]["routes"] if r["receiver"] == alerting.RETRAIN_RECEIVER]
    assert route["continue"] is True and route["matchers"] == ['alertname="FerryModelDriftHigh"']
    # Locally the same early route goes to ferry's receiver, which retrains itself.
    local = alerting.local_config("http://127.0.0.1:9095/alerts")
    [local_receiver] = [r for r in local["receivers"] if r["name"] == alerting.RETRAIN_RECEIVER]
    assert local_receiver["webhook_configs"] == [{"url": "http://127.0.0.1:9095/alerts", "send_resolved": False}]
    assert local["route"]["routes"] == config["route"]["routes"]  # one routing tree, two kinds of receivers


@pytest.mark.parametrize("where", ["cluster", "local"])
def test_amtool_routes_drift_to_retraining_and_to_the_team(tmp_path: Path, where: str) -> None:
    amtool = system_command("amtool")
    config = alerting.cluster_config() if where == "cluster" else alerting.local_config("http://127.0.0.1:9/alerts")
    path = tmp_path / f"{where}.yml"
    text = yaml.safe_dump(config, sort_keys=False)
    path.write_text(text.replace(f"url_file: {alerting.ONCALL_URL_FILE}", "url: https://oncall.invalid/am"))
    check = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr

    def route(*labels: str) -> str:
        out = subprocess.run([amtool, "config", "routes", "test", f"--config.file={path}", *labels],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert route("alertname=FerryModelDriftHigh", "severity=ticket", "team=risk", "model=m") == "retrain,ticket"
    assert route("alertname=FerryModelErrorBudgetBurn", "severity=page", "team=risk") == "page"


def _deploy_docs() -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for f in sorted(DEPLOY.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if "metadata" in d}


def test_sensor_service_account_may_only_create_workflows() -> None:
    docs = _deploy_docs()
    name = events.SENSOR_SERVICE_ACCOUNT
    account, role, binding = docs[("ServiceAccount", name)], docs[("Role", name)], docs[("RoleBinding", name)]
    assert account["metadata"]["namespace"] == role["metadata"]["namespace"] == PROD.namespace
    assert role["rules"] == [{"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": PROD.namespace}]
    for doc in (account, role, binding):
        assert validate_object(doc) == []


def test_models_project_may_sync_sensors() -> None:
    assert ("argoproj.io", "Sensor") in argocd.MODEL_KINDS
