"""Who the rendered pods run as, and whom they talk to, as Kubernetes, KubeRay v1.7 and Argo Workflows v4.1 would
resolve it: every ServiceAccount a pod names exists and may do exactly what the table below says; every
in-cluster address a rendered object holds names a Service that will exist; the rollout step judges the canary
on the cluster's Prometheus and is scraped by it.

The tables are written from the upstream sources (cited beside each), not from ferry's renderers, so a change on
either side that breaks the other fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.contract import names
from ferry.render.bundle import render_objects
from ferry.render.events import SENSOR_SERVICE_ACCOUNT
from ferry.render.monitoring import PLATFORM_OBJECTS, generated_files
from ferry.settings import Settings
from ferry.spec import load_specs

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted((ROOT / "gitops/models").glob("*.yaml"))
DEPLOY = ROOT / "platform/deploy"
APPS = ROOT / "gitops/platform/apps"
NAMESPACE = "ferry"

Right = tuple[str, str, str]  # (apiGroup, resource, verb)


def _rights(group: str, resource: str, *verbs: str) -> set[Right]:
    return {(group, resource, verb) for verb in verbs}


# kuberay v1.7.0 ray-operator/controllers/ray/common/rbac.go BuildRole: the Role KubeRay creates for a RayCluster
# with enableInTreeAutoscaling, which BuildRoleBinding binds to the head pod's serviceAccountName
# (utils.GetHeadGroupServiceAccountName). raycluster_controller.go reconcileAutoscalerServiceAccount: a head that
# names a ServiceAccount must find it existing.
KUBERAY_AUTOSCALER_ROLE = (_rights("", "pods", "get", "list", "watch", "patch") | _rights("", "pods/resize", "patch")
                           | _rights("ray.io", "rayclusters", "get", "patch"))

# What each identity a rendered pod runs as needs, from what runs as it.
WANTED: dict[str, set[Right]] = {
    # Argo steps (the emissary executor: task results, its own pod) and the tune/train resource templates
    # (create a RayJob, wait on it, patch it on retry, delete it when stopped); steps re-read the spec ConfigMap.
    names.SERVICE_ACCOUNT_WORKFLOW: (
        _rights("ray.io", "rayjobs", "create", "get", "list", "watch", "patch", "delete")
        | _rights("ray.io", "rayjobs/status", "get", "list", "watch")
        | _rights("argoproj.io", "workflowtaskresults", "create", "patch")
        | _rights("", "pods", "get", "watch", "patch") | _rights("", "pods/log", "get")
        | _rights("", "configmaps", "get")),
    # The tune/train RayJobs' pods: trial and training code (and the submitter) call no Kubernetes API.
    names.SERVICE_ACCOUNT_RAYJOB: set(),
    # The RayService: ferry's serving code calls no Kubernetes API; only KubeRay's autoscaler sidecar does.
    names.SERVICE_ACCOUNT_SERVING: KUBERAY_AUTOSCALER_ROLE,
    # A drift alert's Sensor creates one Workflow (an Argo Events k8s trigger, operation create).
    SENSOR_SERVICE_ACCOUNT: _rights("argoproj.io", "workflows", "create"),
}
# Whether a pod running as it gets the token automounted (the executor and the Sensor call the API server).
AUTOMOUNT = {names.SERVICE_ACCOUNT_WORKFLOW: True, names.SERVICE_ACCOUNT_SERVING: False,
             names.SERVICE_ACCOUNT_RAYJOB: False, SENSOR_SERVICE_ACCOUNT: True}


def _yaml_docs(paths: list[Path]) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def _deploy() -> list[dict[str, Any]]:
    """The objects `kubectl apply -k platform/deploy` creates (not the kustomization itself)."""
    return [doc for doc in _yaml_docs(sorted(DEPLOY.glob("*.yaml"))) if "metadata" in doc]


def _rendered() -> list[dict[str, Any]]:
    models = [spec.model for spec in load_specs(MODELS)[0]]
    docs = [doc for docs in render_objects(models, "prod").values() for doc in docs]
    docs += [doc for doc in yaml.safe_load_all(generated_files(models)[PLATFORM_OBJECTS]) if doc]
    return [obj for doc in docs for obj in _objects(doc)]


def _objects(tree: Any) -> Iterator[dict[str, Any]]:
    """An object and the manifests its resource templates create (a RayJob lives in a string)."""
    if isinstance(tree, dict):
        if "kind" in tree and isinstance(tree.get("metadata"), dict):
            yield tree
        for key, value in tree.items():
            if key == "manifest" and isinstance(value, str):
                yield from _objects(yaml.safe_load(value))
            else:
                yield from _objects(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _objects(item)


def _service_accounts(tree: Any) -> Iterator[str]:
    """Every serviceAccountName in a rendered object: pod specs, a Workflow's spec, a Sensor's template."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "serviceAccountName":
                yield value
            elif key != "manifest":  # the embedded objects are walked as objects of their own
                yield from _service_accounts(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _service_accounts(item)


def _ray_cluster(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    return {"RayService": spec.get("rayClusterConfig"), "RayJob": spec.get("rayClusterSpec"),
            "RayCluster": spec}.get(obj["kind"])


def _granted(sa: str, deploy: list[dict[str, Any]], rendered: list[dict[str, Any]]) -> set[Right]:
    """What `sa` may do: the Roles bound to it in platform/deploy and the rendered output, plus KubeRay's
    autoscaler Role where it runs the head of an autoscaling Ray cluster."""
    everything = deploy + rendered
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in everything if d["kind"] == "Role"}
    granted: set[Right] = set()
    for binding in (d for d in everything if d["kind"] == "RoleBinding"):
        subjects = {(s["kind"], s["name"], s.get("namespace")) for s in binding["subjects"]}
        if ("ServiceAccount", sa, NAMESPACE) in subjects:
            role = roles[(binding["metadata"]["namespace"], binding["roleRef"]["name"])]
            granted |= {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                        for v in rule["verbs"]}
    for obj in rendered:
        cluster = _ray_cluster(obj)
        if not (cluster and cluster.get("enableInTreeAutoscaling")):
            continue
        if cluster["headGroupSpec"]["template"]["spec"].get("serviceAccountName", obj["metadata"]["name"]) == sa:
            granted |= KUBERAY_AUTOSCALER_ROLE
    return granted


def test_every_service_account_a_pod_uses_exists_with_exactly_the_rights_it_needs() -> None:
    deploy, rendered = _deploy(), _rendered()
    used = {sa for obj in rendered for sa in _service_accounts(obj)}
    assert {names.SERVICE_ACCOUNT_WORKFLOW, names.SERVICE_ACCOUNT_RAYJOB, names.SERVICE_ACCOUNT_SERVING} <= used
    accounts = {d["metadata"]["name"]: d for d in deploy + rendered
                if d["kind"] == "ServiceAccount" and d["metadata"].get("namespace") == NAMESPACE}
    for sa in sorted(used):
        assert sa in accounts, f"pods run as {sa!r}, which neither platform/deploy nor the rendered output creates"
        assert sa in WANTED, f"{sa!r} has no row in WANTED: say what it needs"
        assert _granted(sa, deploy, rendered) == WANTED[sa], sa
        assert accounts[sa].get("automountServiceAccountToken", True) is AUTOMOUNT[sa], sa


def _serving_pods(rendered: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for obj in rendered:
        if obj["kind"] == "RayService":
            cluster = obj["spec"]["rayClusterConfig"]
            yield obj["metadata"]["name"], cluster, cluster["headGroupSpec"]["template"]["spec"]
            for group in cluster["workerGroupSpecs"]:
                yield obj["metadata"]["name"], cluster, group["template"]["spec"]


def test_serving_pods_can_create_nothing_and_hold_no_token_where_they_serve_http() -> None:
    deploy, rendered = _deploy(), _rendered()
    seen = 0
    for where, cluster, pod in _serving_pods(rendered):
        sa = pod["serviceAccountName"]
        assert sa != names.SERVICE_ACCOUNT_WORKFLOW, f"{where}: serving runs with the pipeline's rights"
        verbs = {verb for _, _, verb in _granted(sa, deploy, rendered)}
        assert not verbs & {"create", "delete", "deletecollection", "update", "escalate", "bind", "impersonate"}, where
        # No container of the pod (the Ray container takes requests on 8000) gets the token; only the volume that
        # KubeRay's autoscaler sidecar mounts (autoscalerOptions.volumeMounts) projects one.
        assert pod["automountServiceAccountToken"] is False, where
        token_volumes = {v["name"] for v in pod.get("volumes", []) if any(
            "serviceAccountToken" in source for source in v.get("projected", {}).get("sources", []))}
        for container in pod["containers"]:
            assert not {m["name"] for m in container.get("volumeMounts", [])} & token_volumes, where
        autoscaler = {m["name"] for m in cluster.get("autoscalerOptions", {}).get("volumeMounts", [])}
        assert token_volumes <= autoscaler, where
        seen += 1
    assert seen >= 2 * len(MODELS)


# ------------------------------------------------------------------------------------------------ addresses

ADDRESS = re.compile(r"(?:(https?)://)?\b([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?"
                     r"(?::(\d+))?")
DEFAULT_PORTS = {"http": 80, "https": 443}
Services = dict[tuple[str, str], set[int]]  # (namespace, name) -> ports

# Every cluster has it: the API server (Argo CD's destination `https://kubernetes.default.svc`).
BUILT_IN: Services = {("default", "kubernetes"): {443}}
# Brought by whoever installs ferry, named in gitops/platform/apps/mlflow.yaml (docs/install-cluster.md):
# MLflow's PostgreSQL. Its port is a separate value there, so the address carries none.
INSTALLER_PROVIDED: Services = {("ferry-system", "mlflow-postgres"): {5432}}


def _kps_fullname(release: str, values: dict[str, Any]) -> str:
    """kube-prometheus-stack templates/_helpers.tpl `kube-prometheus-stack.fullname` (88.x)."""
    if values.get("fullnameOverride"):
        return str(values["fullnameOverride"])[:26].rstrip("-")
    chart = values.get("nameOverride") or "kube-prometheus-stack"
    return (release if chart in release else f"{release}-{chart}")[:26].rstrip("-")


def _chart_services() -> Services:
    """The Services the pinned charts create with the values in gitops/platform/apps (read from their templates)."""
    apps = {d["metadata"]["name"]: d for d in _yaml_docs(sorted(APPS.glob("*.yaml"))) if d["kind"] == "Application"}
    kps = apps["kube-prometheus-stack"]["spec"]
    release, values = kps["source"]["helm"]["releaseName"], kps["source"]["helm"]["valuesObject"]
    ns, full = kps["destination"]["namespace"], _kps_fullname(release, values)
    mlflow = apps["mlflow"]["spec"]
    mlflow_values = mlflow["source"]["helm"]["valuesObject"]
    return {
        # templates/prometheus/service.yaml: `<fullname>-prometheus`, prometheus.service.port 9090 and the
        # config reloader's web port 8080.
        (ns, f"{full}-prometheus"): {9090, 8080},
        # Prometheus Operator: the governing Service of every Prometheus / Alertmanager it runs.
        (ns, "prometheus-operated"): {9090},
        (ns, "alertmanager-operated"): {9093},
        # templates/alertmanager/service.yaml: `<fullname>-alertmanager`, alertmanager.service.port 9093.
        (ns, f"{full}-alertmanager"): {9093, 8080},
        # The grafana subchart: `<release>-grafana` on service.port 80.
        (ns, f"{release}-grafana"): {80},
        # community-charts mlflow templates/service.yaml: `mlflow.fullname` (fullnameOverride) on service.port.
        (mlflow["destination"]["namespace"], mlflow_values["fullnameOverride"]): {mlflow_values["service"]["port"]},
        # CloudPirates redis templates/service.yaml: `redis.fullname` (fullnameOverride) on service.port (6379).
        (apps["redis"]["spec"]["destination"]["namespace"],
         apps["redis"]["spec"]["source"]["helm"]["valuesObject"]["fullnameOverride"]): {6379},
    }


def _controller_services(rendered: list[dict[str, Any]]) -> Services:
    """Services the operators make from rendered objects: argo-events eventsource/resource.go
    `<name>-eventsource-svc` with spec.service.ports; KubeRay utils/util.go `<name>-serve-svc` (Serve, 8000) and
    `<name>-head-svc` for a RayService."""
    found: Services = {}
    for obj in rendered:
        ns, name = obj["metadata"].get("namespace", NAMESPACE), obj["metadata"].get("name")
        if obj["kind"] == "EventSource":
            found[(ns, f"{name}-eventsource-svc")] = {p["port"] for p in obj["spec"]["service"]["ports"]}
        elif obj["kind"] == "RayService":
            found[(ns, f"{name}-serve-svc")] = {8000}
            found[(ns, f"{name}-head-svc")] = {6379, 8265, 10001, 8080, 8000}
        elif obj["kind"] == "Service":
            found[(ns, name)] = {p["port"] for p in obj["spec"]["ports"]}
    return found


def _strings(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _strings(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _strings(item)
    elif isinstance(tree, str):
        yield tree


def test_every_in_cluster_address_names_a_service_that_exists() -> None:
    rendered = _rendered()
    apps = _yaml_docs(sorted(APPS.glob("*.yaml")))
    services = {**BUILT_IN, **INSTALLER_PROVIDED, **_chart_services(), **_controller_services(rendered + _deploy())}
    found = 0
    for obj in rendered + apps:
        for text in _strings(obj):  # embedded YAML (serveConfigV2, manifests, runtimeEnvYAML) included
            for match in ADDRESS.finditer(text):
                scheme, name, ns, port = match.group(1), match.group(2), match.group(4), match.group(5)
                where = f"{obj['kind']}/{obj['metadata'].get('name')}: {match.group(0)}"
                assert (ns, name) in services, f"{where}: no Service {ns}/{name} is created"
                wanted = int(port) if port else DEFAULT_PORTS.get(scheme or "")
                assert wanted is None or wanted in services[(ns, name)], f"{where}: {ns}/{name} has no port {wanted}"
                found += 1
    assert found >= 2 * len(MODELS)


# ------------------------------------------------------------------------------------------- the rollout step


def _rollout_template(rendered: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    template = next(obj for obj in rendered if obj["kind"] == "WorkflowTemplate")
    step = next(t for t in template["spec"]["templates"] if t["name"] == names.STEP_ROLLOUT)
    return template, step


def _pod_labels(template: dict[str, Any], step: dict[str, Any]) -> dict[str, str]:
    """argo-workflows v4.1.2 workflowpod.go addMetadata: spec.podMetadata, then the template's metadata.labels (the
    Workflow's own labels are not copied)."""
    return {**template["spec"].get("podMetadata", {}).get("labels", {}), **step.get("metadata", {}).get("labels", {})}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    ops = {"In": lambda k, v: labels.get(k) in v, "NotIn": lambda k, v: labels.get(k) not in v,
           "Exists": lambda k, _: k in labels, "DoesNotExist": lambda k, _: k not in labels}
    return (all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
            and all(ops[e["operator"]](e["key"], e.get("values")) for e in selector.get("matchExpressions", [])))


def _env(container: dict[str, Any], pod_ip: str) -> dict[str, str]:
    env = {}
    for var in container["env"]:
        secret = var.get("valueFrom", {}).get("secretKeyRef")
        if secret is not None:  # the prediction log's reader keys (a rollout judged on shadow and outcomes)
            assert secret["name"] == names.LOG_READER_SECRET and var["name"] in names.LOG_SECRET_KEYS, var
        elif "valueFrom" in var:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}, var
            env[var["name"]] = pod_ip
        else:
            env[var["name"]] = var["value"]
    return env


def test_the_rollout_step_queries_the_clusters_prometheus_and_is_scraped_by_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = _rendered()
    template, step = _rollout_template(rendered)
    container = step["container"]
    for key, value in _env(container, "10.1.2.3").items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    # It judges the canary on the cluster's Prometheus, not on loopback.
    prometheus = ADDRESS.fullmatch(settings.prometheus_url)
    assert prometheus, f"the rollout step queries {settings.prometheus_url}, no in-cluster Service"
    service, port = (prometheus.group(4), prometheus.group(2)), int(prometheus.group(5) or 80)
    assert port in _chart_services().get(service, set()) and "prometheus" in service[1], settings.prometheus_url
    # It serves its metrics on the pod IP, on a named port a PodMonitor selecting its pod scrapes...
    assert settings.rollout_metrics_host == "10.1.2.3"
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    labels = _pod_labels(template, step)
    monitors = [obj for obj in rendered if obj["kind"] == "PodMonitor" and _selects(obj["spec"]["selector"], labels)
                and template["metadata"]["namespace"] in obj["spec"]["namespaceSelector"]["matchNames"]]
    endpoints = [e for monitor in monitors for e in monitor["spec"]["podMetricsEndpoints"] if e.get("port") in ports]
    assert endpoints, f"no PodMonitor scrapes a port of the rollout pod (labels {labels}, ports {ports})"
    [endpoint] = endpoints
    assert ports[endpoint["port"]] == settings.rollout_metrics_port
    # ...for at least two scrapes after its last decision...
    assert settings.rollout_metrics_linger_s >= 2 * int(endpoint["interval"].removesuffix("s"))
    # ...and the namespace's NetworkPolicies let Prometheus reach that port, and the step reach Prometheus.
    assert _prometheus_may_reach(labels, endpoint["port"], ports[endpoint["port"]])
    assert not [p for p in _policies_selecting(labels) if "Egress" in p["spec"].get("policyTypes", [])], \
        "an egress policy on the rollout pod needs a rule to Prometheus in `monitoring`, port 9090"


def _policies_selecting(labels: dict[str, str]) -> list[dict[str, Any]]:
    return [d for d in _deploy() if d["kind"] == "NetworkPolicy" and d["metadata"]["namespace"] == NAMESPACE
            and _selects(d["spec"]["podSelector"], labels)]


def _prometheus_may_reach(labels: dict[str, str], port_name: str, port: int) -> bool:
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    for policy in _policies_selecting(labels):
        for rule in policy["spec"].get("ingress", []):
            peers = [p for p in rule.get("from", []) if _selects(p.get("podSelector", {}), prometheus)
                     and p.get("namespaceSelector", {}).get("matchLabels", {}).get(
                         "kubernetes.io/metadata.name") == "monitoring"]
            if peers and any(p["port"] in (port_name, port) for p in rule.get("ports", [])):
                return True
    return False


def test_each_step_pod_knows_the_image_it_runs_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """The register step records it on the version (`ferry lineage`), read through the step's own settings.
    (Tune and train run as RayJobs: their pods are not the Workflow's step containers.)"""
    seen = set()
    for template in (obj for obj in _rendered() if obj["kind"] == "WorkflowTemplate"):
        for step in (t for t in template["spec"]["templates"] if t["name"] in names.STEPS and "container" in t):
            for key, value in _env(step["container"], "10.1.2.3").items():
                monkeypatch.setenv(key, value)
            assert Settings().image == step["container"]["image"], step["name"]
            seen.add(step["name"])
    assert names.STEP_REGISTER in seen, seen


def test_a_data_step_that_trains_on_served_traffic_reads_the_log_the_routers_write(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`source: log` on a cluster: the data step (only it) gets the prediction log's URI and the object store's
    credentials, the same keys as the routers' from a Secret of its own (read-only keys); the objects stay valid."""
    from tests.support.kube_schemas import validate_object

    spec = load_specs(MODELS)[0][0].model
    data = spec.spec.data.model_dump() | {"source": "log", "window": {"days": 28}, "params": {}}
    data["split"]["train_start"] = None
    logged = spec.model_validate(spec.model_dump() | {"spec": spec.spec.model_dump() | {"data": data}})
    objects = [obj for docs in render_objects([logged], "prod", "v1").values() for doc in docs
               for obj in _objects(doc)]
    assert [problem for obj in objects for problem in validate_object(obj)] == []
    [template] = [obj for obj in objects if obj["kind"] == "WorkflowTemplate"]
    [service] = [obj for obj in objects if obj["kind"] == "RayService"]
    router_env = {e["name"]: e for group in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
                  for c in group["template"]["spec"]["containers"] for e in c.get("env", [])}
    for step in (t for t in template["spec"]["templates"] if t["name"] in names.STEPS and "container" in t):
        env = {e["name"]: e for e in step["container"]["env"]}
        secrets = {k: e for k, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
        if step["name"] != names.STEP_DATA:
            assert not secrets and "FERRY_PREDICTION_LOG_URI_OVERRIDE" not in env, step["name"]
            continue
        assert secrets.keys() == {k for k, e in router_env.items() if "secretKeyRef" in e.get("valueFrom", {})
                                  and e["valueFrom"]["secretKeyRef"]["name"] == names.LOG_SECRET}
        assert {e["valueFrom"]["secretKeyRef"]["name"] for e in secrets.values()} == {names.LOG_READER_SECRET}
        monkeypatch.setenv("FERRY_PREDICTION_LOG_URI_OVERRIDE", env["FERRY_PREDICTION_LOG_URI_OVERRIDE"]["value"])
        assert Settings().prediction_log_uri == yaml.safe_load(
            service["spec"]["serveConfigV2"])["applications"][0]["args"]["prediction_log"]["uri"]


def test_a_rollout_with_a_shadow_stage_reads_the_log_in_its_rollout_step_only() -> None:
    """`rollout.shadow` on a cluster: the rollout step (it judges shadow scores and labels) gets the log's URI and
    the reader Secret's keys; the data step of a simulator spec gets nothing; the objects stay valid."""
    from tests.support.kube_schemas import validate_object

    spec = load_specs(MODELS)[0][0].model
    rollout = spec.spec.rollout.model_dump() | {"shadow": {"duration": "10m", "sample": 0.5},
                                                "outcomes": {"metrics": ["average_precision"]}}
    shadowed = spec.model_validate(spec.model_dump() | {"spec": spec.spec.model_dump() | {"rollout": rollout}})
    objects = [obj for docs in render_objects([shadowed], "prod", "v1").values() for doc in docs
               for obj in _objects(doc)]
    assert [problem for obj in objects for problem in validate_object(obj)] == []
    [template] = [obj for obj in objects if obj["kind"] == "WorkflowTemplate"]
    reading = set()
    for step in (t for t in template["spec"]["templates"] if t["name"] in names.STEPS and "container" in t):
        env = {e["name"]: e for e in step["container"]["env"]}
        if "FERRY_PREDICTION_LOG_URI_OVERRIDE" in env:
            reading.add(step["name"])
            assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env.values()
                    if "secretKeyRef" in e.get("valueFrom", {})} == {names.LOG_READER_SECRET}
    assert reading == {names.STEP_ROLLOUT}
