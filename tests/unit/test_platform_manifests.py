"""Static checks of ferry's cluster install: the Argo CD app-of-apps in gitops/platform, the base manifests and
the image in platform/deploy. Nothing here talks to a cluster: objects are validated strictly against the
vendored schemas (tests/support/kube_schemas.py) and checked against the rules in docs/install-cluster.md."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.kube_schemas import SchemasNotFoundError, supported_kinds, validate_object

from ferry.render import pods
from ferry.render.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "gitops" / "platform"
APPS = PLATFORM / "apps"
DEPLOY = ROOT / "platform" / "deploy"
RENDERED_PROD = ROOT / "gitops" / "rendered" / "prod"
DOCKERFILE = DEPLOY / "Dockerfile"
PROD = PROFILES["prod"]

# Documents that have no schema on purpose. Anything else without a schema fails: a new kind must be added
# to tests/support/kube_schemas.py (or here, with a reason).
ALLOWED_WITHOUT_SCHEMA = {
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),  # kustomize's own file, never sent to the API server
}

# Pinned charts: (repoURL, chart) -> version. Changing a pin is a reviewed change of this table too.
CHART_PINS = {
    ("https://argoproj.github.io/argo-helm", "argo-workflows"): "2.0.4",
    ("https://argoproj.github.io/argo-helm", "argo-events"): "2.4.26",
    ("https://ray-project.github.io/kuberay-helm/", "kuberay-operator"): "1.7.0",
    ("https://prometheus-community.github.io/helm-charts", "kube-prometheus-stack"): "88.6.4",
    ("https://community-charts.github.io/helm-charts", "mlflow"): "1.12.0",
}

WAVE = "argocd.argoproj.io/sync-wave"
HEALTH = "resource.customizations.health."


# ------------------------------------------------------------------------------------------------ loading


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifest_files() -> list[Path]:
    return sorted([*PLATFORM.rglob("*.yaml"), *DEPLOY.rglob("*.yaml")])


def _documents(files: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in files:
        for index, doc in enumerate(_load(path)):
            found.append((f"{path.relative_to(ROOT)}:{index}:{doc.get('kind')}/{_name(doc)}", doc))
    return found


def _name(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return str(meta.get("name") or meta.get("generateName") or "")


def _rendered_prod_documents() -> list[tuple[str, dict[str, Any]]]:
    """Every object `ferry render --env prod` committed, plus the RayJobs embedded in resource templates."""
    found = []
    for where, doc in _documents(sorted(RENDERED_PROD.rglob("*.yaml"))):
        found.append((where, doc))
        for template in (doc.get("spec") or {}).get("templates", []):
            if "resource" in template:
                found.append((f"{where}#{template['name']}", yaml.safe_load(template["resource"]["manifest"])))
    return found


MANIFESTS = _documents(_manifest_files())
# Every platform manifest, plus the Argo CD objects `ferry render` writes (AppProject and ApplicationSet).
VALIDATED_DOCS = MANIFESTS + _documents(sorted((RENDERED_PROD / "_argocd").glob("*.yaml")))
ALL_CLUSTER_DOCS = MANIFESTS + _rendered_prod_documents()


def _ids(values: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [where for where, _ in values]


def _by_kind(kind: str, docs: list[tuple[str, dict[str, Any]]] = MANIFESTS) -> dict[str, dict[str, Any]]:
    return {f"{d.get('metadata', {}).get('namespace', '')}/{_name(d)}": d for _, d in docs if d.get("kind") == kind}


def _apps() -> dict[str, dict[str, Any]]:
    return {_name(d): d for path in sorted(APPS.glob("*.yaml")) for d in _load(path) if d["kind"] == "Application"}


@pytest.fixture(scope="module")
def schema_kinds() -> frozenset[tuple[str, str]]:
    try:
        return supported_kinds()
    except SchemasNotFoundError as exc:  # pragma: no cover - depends on the checkout
        pytest.skip(f"vendored Kubernetes schemas unavailable: {exc}")


# ------------------------------------------------------------------------------------- schema validation


def test_manifests_are_found() -> None:
    kinds = {d["kind"] for _, d in MANIFESTS}
    assert {"Application", "AppProject", "ConfigMap", "Namespace", "ServiceAccount", "Role", "RoleBinding",
            "NetworkPolicy", "Kustomization"} <= kinds
    assert (PLATFORM / "root.yaml").is_file()
    assert len(list(APPS.glob("*.yaml"))) >= 8


@pytest.mark.parametrize(("where", "doc"), VALIDATED_DOCS, ids=_ids(VALIDATED_DOCS))
def test_document_validates_strictly(where: str, doc: dict[str, Any], schema_kinds: frozenset[tuple[str, str]]) -> None:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in ALLOWED_WITHOUT_SCHEMA:
        assert where.split(":")[0].endswith("kustomization.yaml"), f"{where}: {key} only in kustomization.yaml"
        return
    assert key in schema_kinds, f"{where}: no schema for {key}; add one or list it in ALLOWED_WITHOUT_SCHEMA"
    assert validate_object(doc) == [], where


def test_validation_is_strict_for_applications() -> None:
    app = _apps()["mlflow"]
    broken = yaml.safe_load(yaml.safe_dump(app))
    broken["spec"]["syncPolicy"]["automatd"] = broken["spec"]["syncPolicy"].pop("automated")
    try:
        errors = validate_object(broken)
    except SchemasNotFoundError as exc:  # pragma: no cover
        pytest.skip(str(exc))
    assert any("automatd" in e for e in errors), errors


# -------------------------------------------------------------------------------------------- app-of-apps


def test_root_application_points_at_the_apps_folder() -> None:
    [root] = _load(PLATFORM / "root.yaml")
    assert (root["kind"], _name(root), root["metadata"]["namespace"]) == ("Application", "ferry-platform", "argocd")
    source = root["spec"]["source"]
    assert source["path"] == "gitops/platform/apps"
    assert source["repoURL"] == PROD.repo_url
    assert root["spec"]["project"] == "ferry-platform"
    assert root["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_one_application_per_component() -> None:
    charts = {src["chart"] for app in _apps().values() if "chart" in (src := app["spec"]["source"])}
    assert charts == {chart for _, chart in CHART_PINS}
    paths = {app["spec"]["source"].get("path") for app in _apps().values()} - {None}
    assert paths == {"gitops/platform/argocd", "platform/deploy", "gitops/rendered/prod/_argocd",
                     "monitoring/generated/kubernetes"}
    for path in paths:
        assert (ROOT / path).is_dir(), path


@pytest.mark.parametrize("name", sorted(_apps()))
def test_application_shape(name: str) -> None:
    app = _apps()[name]
    spec = app["spec"]
    assert app["metadata"]["namespace"] == "argocd"
    assert spec["project"] == "ferry-platform"
    assert re.fullmatch(r"-?\d+", app["metadata"]["annotations"][WAVE]), "every component has a sync wave"
    assert spec["destination"]["server"] == "https://kubernetes.default.svc"
    assert "automated" in spec["syncPolicy"]
    source = spec["source"]
    if "chart" in source:
        assert CHART_PINS[(source["repoURL"], source["chart"])] == source["targetRevision"], "unpinned or changed chart"
        assert re.fullmatch(r"\d+\.\d+\.\d+", source["targetRevision"])
        helm = source["helm"]
        assert isinstance(helm["valuesObject"], dict) and "values" not in helm, "values go under helm.valuesObject"
        assert helm["releaseName"]
    else:
        assert source["repoURL"] == PROD.repo_url and source["targetRevision"] == PROD.target_revision


def test_sync_waves_put_crds_and_operators_first_and_models_last() -> None:
    wave = {name: int(app["metadata"]["annotations"][WAVE]) for name, app in _apps().items()}
    [project] = _load(APPS / "project.yaml")
    assert int(project["metadata"]["annotations"][WAVE]) < min(wave.values())
    assert wave["ferry-argocd-config"] < wave["ferry-base"] < wave["kube-prometheus-stack"]
    operators = ("kube-prometheus-stack", "kuberay-operator", "argo-workflows", "argo-events")
    assert {wave[name] for name in operators} <= {-2, -1}
    assert wave["kube-prometheus-stack"] < wave["kuberay-operator"]  # their ServiceMonitors need its CRDs
    assert max(wave[name] for name in operators) < wave["mlflow"] == 0
    assert wave["ferry-models"] == max(wave.values()) and wave["ferry-models"] > wave["mlflow"]
    assert wave["ferry-monitoring"] > wave["kube-prometheus-stack"]  # PrometheusRule is its CRD


@pytest.mark.parametrize("name", ["kuberay-operator", "kube-prometheus-stack", "argo-workflows", "argo-events"])
def test_large_crds_are_synced_server_side(name: str) -> None:
    assert "ServerSideApply=true" in _apps()[name]["spec"]["syncPolicy"]["syncOptions"]


def test_kuberay_is_the_1_7_line() -> None:
    source = _apps()["kuberay-operator"]["spec"]["source"]
    assert source["targetRevision"].startswith("1.7.")
    assert source["helm"]["valuesObject"]["image"]["tag"] == f"v{source['targetRevision']}"


def test_app_project_is_limited_to_the_sources_and_destinations_used() -> None:
    [project] = _load(APPS / "project.yaml")
    [root] = _load(PLATFORM / "root.yaml")
    spec = project["spec"]
    used_repos = {app["spec"]["source"]["repoURL"] for app in [*_apps().values(), root]}
    assert set(spec["sourceRepos"]) == used_repos
    namespaces = {d["namespace"] for d in spec["destinations"]}
    assert {d["server"] for d in spec["destinations"]} == {"https://kubernetes.default.svc"}
    assert {app["spec"]["destination"]["namespace"] for app in _apps().values()} <= namespaces
    assert {"ferry", "ferry-system", "argocd"} <= namespaces
    flat = yaml.safe_dump(spec)
    assert "'*'" not in flat and '"*"' not in flat, "no wildcards in the platform project"
    assert {(r["group"], r["kind"]) for r in spec["clusterResourceWhitelist"]} <= {
        ("apiextensions.k8s.io", "CustomResourceDefinition"), ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"), ("", "Namespace"),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    }


def test_models_come_from_the_rendered_argocd_folder() -> None:
    app = _apps()["ferry-models"]
    folder = ROOT / app["spec"]["source"]["path"]
    kinds = {d["kind"]: d for path in folder.glob("*.yaml") for d in _load(path)}
    # + the drift alerts' EventSource and EventBus all models' Sensors share (ferry.render.events)
    assert set(kinds) == {"AppProject", "ApplicationSet", "EventSource", "EventBus"}
    [project] = _load(APPS / "project.yaml")
    assert app["spec"]["destination"]["namespace"] in {d["namespace"] for d in project["spec"]["destinations"]}


def test_mlflow_is_where_the_renderer_points_and_uses_existing_secrets() -> None:
    app = _apps()["mlflow"]
    values = app["spec"]["source"]["helm"]["valuesObject"]
    url = f"http://{values['fullnameOverride']}.{app['spec']['destination']['namespace']}.svc.cluster.local:" \
          f"{values['service']['port']}"
    assert url == PROD.mlflow_uri
    store = values["backendStore"]
    assert store["postgres"]["enabled"] is True
    assert "password" not in store["postgres"] and "user" not in store["postgres"]
    assert store["existingDatabaseSecret"]["name"]
    s3 = values["artifactRoot"]["s3"]
    assert s3["enabled"] is True and s3["existingSecret"]["name"]
    assert not {"awsAccessKeyId", "awsSecretAccessKey"} & set(s3)
    assert values["artifactRoot"]["proxiedArtifactStorage"] is True, "steps must not need S3 credentials"
    assert "MLFLOW_S3_ENDPOINT_URL" in values["extraEnvVars"]


def test_argo_workflows_runs_ferry_pipelines_with_ferrys_identity() -> None:
    values = _apps()["argo-workflows"]["spec"]["source"]["helm"]["valuesObject"]
    assert values["controller"]["workflowNamespaces"] == [PROD.namespace]
    assert values["workflow"]["serviceAccount"]["create"] is False and values["workflow"]["rbac"]["create"] is False
    assert "retentionPolicy" not in values["controller"], "Argo CD would re-create garbage-collected Workflows"
    executor = values["executor"]["securityContext"]
    assert executor["runAsNonRoot"] is True and executor["allowPrivilegeEscalation"] is False
    assert executor["capabilities"]["drop"] == ["ALL"] and executor["seccompProfile"]["type"] == "RuntimeDefault"
    sas = _by_kind("ServiceAccount")
    assert f"{PROD.namespace}/{PROD.service_account}" in sas


def test_grafana_watches_dashboard_configmaps_and_alertmanager_is_on() -> None:
    values = _apps()["kube-prometheus-stack"]["spec"]["source"]["helm"]["valuesObject"]
    dashboards = values["grafana"]["sidecar"]["dashboards"]
    assert (dashboards["enabled"], dashboards["label"], dashboards["labelValue"]) == (True, "grafana_dashboard", "1")
    assert dashboards["searchNamespace"] == "ALL"
    assert values["grafana"]["admin"]["existingSecret"]
    assert values["alertmanager"]["enabled"] is True
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["ruleSelectorNilUsesHelmValues"] is False and spec["podMonitorSelectorNilUsesHelmValues"] is False


# Where each chart takes the resources of the workloads it deploys (a missing key here is an unbounded pod).
CHART_RESOURCES = {
    "argo-workflows": ("controller", "executor", "server"),
    "argo-events": ("controller",),
    "kuberay-operator": ("",),
    "mlflow": ("",),
    "kube-prometheus-stack": ("prometheusOperator", "prometheus.prometheusSpec", "alertmanager.alertmanagerSpec",
                              "grafana", "grafana.sidecar", "kube-state-metrics", "prometheus-node-exporter"),
}


@pytest.mark.parametrize("name", sorted(CHART_RESOURCES))
def test_chart_workloads_have_requests_and_limits(name: str) -> None:
    values = _apps()[name]["spec"]["source"]["helm"]["valuesObject"]
    for path in CHART_RESOURCES[name]:
        node = values
        for key in filter(None, path.split(".")):
            node = node[key]
        resources = node["resources"]
        assert set(resources) == {"requests", "limits"}, (name, path)
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])


# ----------------------------------------------------------------------------------------- health checks


def _argocd_cm() -> dict[str, Any]:
    [cm] = _load(PLATFORM / "argocd" / "argocd-cm.yaml")
    return cm


def test_health_check_keys_exist() -> None:
    cm = _argocd_cm()
    assert (cm["kind"], _name(cm), cm["metadata"]["namespace"]) == ("ConfigMap", "argocd-cm", "argocd")
    for kind in ("ray.io_RayJob", "ray.io_RayService", "argoproj.io_Application"):
        script = cm["data"][HEALTH + kind]
        assert "return hs" in script and "obj.status" in script
    assert "Prune=false" in cm["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]


def _lua_health(kind: str) -> Any:
    lupa = pytest.importorskip("lupa", reason="no Lua interpreter (pip install lupa) to run the health checks")
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    check = lua.execute("return function(obj)\n" + _argocd_cm()["data"][HEALTH + kind] + "\nend")

    def run(obj: dict[str, Any]) -> tuple[str, str]:
        result = check(lua.table_from(obj, recursive=True))
        return result["status"], result["message"]

    return run


@pytest.mark.parametrize(("status", "expected"), [
    (None, "Progressing"),
    ({"jobDeploymentStatus": "Initializing"}, "Progressing"),
    ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, "Progressing"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, "Healthy"),
    ({"jobDeploymentStatus": "Running", "jobStatus": "SUCCEEDED"}, "Progressing"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED", "message": "exit 1"}, "Degraded"),
    ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}, "Degraded"),
    ({"jobDeploymentStatus": "Suspended"}, "Suspended"),
])
def test_rayjob_health(status: dict[str, Any] | None, expected: str) -> None:
    obj: dict[str, Any] = {"kind": "RayJob", "metadata": {"name": "train"}}
    if status is not None:
        obj["status"] = status
    assert _lua_health("ray.io_RayJob")(obj)[0] == expected


@pytest.mark.parametrize(("status", "expected"), [
    (None, "Progressing"),
    ({"conditions": [{"type": "Ready", "status": "False"}]}, "Progressing"),
    ({"conditions": [{"type": "Ready", "status": "True"}, {"type": "UpgradeInProgress", "status": "False"}]},
     "Healthy"),
    ({"conditions": [{"type": "Ready", "status": "True"}, {"type": "UpgradeInProgress", "status": "True"}]},
     "Healthy"),
    ({"serviceStatus": "Running"}, "Healthy"),
    ({"conditions": [{"type": "Ready", "status": "False"}],
      "activeServiceStatus": {"applicationStatuses": {"m": {"status": "DEPLOY_FAILED", "message": "boom"}}}},
     "Degraded"),
    ({"activeServiceStatus": {"applicationStatuses": {"m": {"status": "DEPLOYING"}}}}, "Progressing"),
])
def test_rayservice_health(status: dict[str, Any] | None, expected: str) -> None:
    obj: dict[str, Any] = {"kind": "RayService", "metadata": {"name": "m"}}
    if status is not None:
        obj["status"] = status
    assert _lua_health("ray.io_RayService")(obj)[0] == expected


def test_application_health_is_passed_through_for_sync_waves() -> None:
    run = _lua_health("argoproj.io_Application")
    assert run({"status": {"health": {"status": "Degraded", "message": "x"}}}) == ("Degraded", "x")
    assert run({"metadata": {"name": "new"}})[0] == "Progressing"


# ------------------------------------------------------------------------------------------ RBAC, secrets


def _rules() -> Iterator[tuple[str, dict[str, Any]]]:
    for where, doc in ALL_CLUSTER_DOCS:
        if doc.get("kind") in ("Role", "ClusterRole"):
            for rule in doc.get("rules", []):
                yield where, rule


def test_no_wildcards_in_rbac() -> None:
    rules = list(_rules())
    assert rules
    for where, rule in rules:
        for field in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(field, []), f"{where}: wildcard in {field}"


def test_nothing_cluster_wide_in_platform_deploy() -> None:
    for where, doc in _documents(sorted(DEPLOY.rglob("*.yaml"))):
        assert doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"), where


def test_workflow_role_is_exactly_what_the_pipeline_needs() -> None:
    role = _by_kind("Role")[f"{PROD.namespace}/{PROD.service_account}"]
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    wanted = {
        *(("ray.io", "rayjobs", v) for v in ("create", "get", "list", "watch", "patch", "delete")),
        *(("ray.io", "rayjobs/status", v) for v in ("get", "list", "watch")),
        ("argoproj.io", "workflowtaskresults", "create"), ("argoproj.io", "workflowtaskresults", "patch"),
        ("", "pods", "get"), ("", "pods", "watch"), ("", "pods", "patch"), ("", "pods/log", "get"),
        ("", "configmaps", "get"),
    }
    assert granted == wanted
    binding = _by_kind("RoleBinding")[f"{PROD.namespace}/{PROD.service_account}"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": _name(role)}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": PROD.service_account,
                                    "namespace": PROD.namespace}]


def test_operator_role_reads_runs_and_starts_them_only() -> None:
    """`ferry runs|logs|submit --argo-server` act with this identity (Argo Server in client auth mode)."""
    role = _by_kind("Role")[f"{PROD.namespace}/ferry-operator"]
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == {
        *(("argoproj.io", "workflows", v) for v in ("get", "list", "watch", "create")),
        ("argoproj.io", "workflowtemplates", "get"), ("argoproj.io", "workflowtemplates", "list"),
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods/log", "get"),
    }
    binding = _by_kind("RoleBinding")[f"{PROD.namespace}/ferry-operator"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ferry-operator", "namespace": PROD.namespace}]
    account = _by_kind("ServiceAccount")[f"{PROD.namespace}/ferry-operator"]
    assert account["automountServiceAccountToken"] is False, "no pod runs as the operator"


def test_no_secret_values_in_git() -> None:
    for path in sorted([*(ROOT / "gitops").rglob("*.yaml"), *DEPLOY.rglob("*.yaml")]):
        for doc in _load(path):
            if doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), f"{path}: a Secret with values"


# Value keys that would hold a credential literal (not `passwordKey`, `keyOfAccessKeyId`: those name a Secret key).
_CREDENTIAL_KEY = re.compile(
    r"(admin|aws|flaskserver)?(password|secretkey|secretaccesskey|accesskeyid|token|connectionstring)", re.I)


def _credential_literals(node: Any, path: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and value and _CREDENTIAL_KEY.fullmatch(str(key)):
                yield f"{path}.{key}"
            yield from _credential_literals(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _credential_literals(item, f"{path}[{index}]")


@pytest.mark.parametrize("name", sorted(_apps()))
def test_helm_values_hold_no_credentials(name: str) -> None:
    values = _apps()[name]["spec"]["source"].get("helm", {}).get("valuesObject", {})
    assert list(_credential_literals(values)) == []


# ------------------------------------------------------------------------- namespaces, network policies


def test_namespaces_enforce_restricted_pod_security() -> None:
    namespaces = _by_kind("Namespace")
    assert {"/ferry", "/ferry-system"} <= set(namespaces)
    for name in ("/ferry", "/ferry-system"):
        labels = namespaces[name]["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", (name, mode)


def _policies(namespace: str) -> dict[str, dict[str, Any]]:
    return {_name(d): d["spec"] for _, d in MANIFESTS
            if d.get("kind") == "NetworkPolicy" and d["metadata"]["namespace"] == namespace}


def _ports(rule: dict[str, Any]) -> set[int | str]:
    return {p["port"] for p in rule.get("ports", [])}


def _namespace_of(peer: dict[str, Any]) -> str | None:
    """The namespace a `from` peer admits: None for this policy's own namespace, "*" for any."""
    if "namespaceSelector" not in peer:
        return None if "podSelector" in peer else "*"
    labels = peer["namespaceSelector"].get("matchLabels", {})
    return labels.get("kubernetes.io/metadata.name", "*")


@pytest.mark.parametrize("namespace", ["ferry", "ferry-system"])
def test_default_deny_ingress(namespace: str) -> None:
    deny = [spec for spec in _policies(namespace).values()
            if spec["podSelector"] == {} and spec["policyTypes"] == ["Ingress"] and not spec.get("ingress")]
    assert len(deny) == 1


def test_serving_port_is_open_on_serving_pods_only() -> None:
    policies = _policies("ferry")
    serving = [s for s in policies.values() if any(8000 in _ports(r) for r in s.get("ingress", []))]
    assert len(serving) == 1
    assert serving[0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "serving"}}
    assert [r.get("from") for r in serving[0]["ingress"]] == [None]  # any client


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"Exists": key in labels, "DoesNotExist": key not in labels,
              "In": labels.get(key) in values, "NotIn": labels.get(key) not in values}[op]
        if not ok:
            return False
    return True


def _ray_head_labels() -> list[dict[str, str]]:
    """The labels of every Ray head pod the rendered manifests create (KubeRay adds ray.io/node-type)."""
    found = []
    for _, doc in _rendered_prod_documents():
        if doc.get("apiVersion") == "ray.io/v1" and doc.get("kind") in ("RayJob", "RayService"):
            cluster = doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]
            labels = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
            found.append({**labels, "ray.io/node-type": "head", "ray.io/cluster": "c"})
    assert found
    return found


def test_ray_head_ports_only_from_the_same_namespace() -> None:
    head_ports = {6379, 8265, 10001}
    heads = _ray_head_labels()
    opened: set[int | str] = set()
    for name, spec in _policies("ferry").items():
        if not any(_selects(spec["podSelector"], labels) for labels in heads):
            continue
        for rule in spec.get("ingress", []):
            ports = _ports(rule) or head_ports  # no ports: every port
            for peer in rule.get("from", [{}]):
                for port in ports & head_ports:
                    where = _namespace_of(peer)
                    # The KubeRay operator reads RayJob / Serve status from the dashboard API.
                    assert where is None or (where, port) == ("kuberay-system", 8265), (name, peer, port)
            opened |= ports & head_ports
    assert opened == head_ports


def test_mlflow_only_from_the_ferry_namespace() -> None:
    mlflow_port = int(PROD.mlflow_uri.rsplit(":", 1)[1])
    reaching = []
    for spec in _policies("ferry-system").values():
        selects_mlflow = spec["podSelector"] in ({}, {"matchLabels": {"app.kubernetes.io/name": "mlflow"}})
        for rule in spec.get("ingress", []) if selects_mlflow else []:
            ports = _ports(rule)
            if ports and mlflow_port not in ports:
                continue  # e.g. Prometheus on ports named `metrics` only
            reaching += [_namespace_of(peer) for peer in rule.get("from", [{}])]
    assert reaching == ["ferry"]


@pytest.mark.parametrize("namespace", ["ferry", "ferry-system"])
def test_prometheus_may_scrape_from_monitoring(namespace: str) -> None:
    peers = [peer for spec in _policies(namespace).values() for rule in spec.get("ingress", [])
             for peer in rule.get("from", []) if _namespace_of(peer) == "monitoring"
             and peer.get("podSelector") == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}]
    assert peers


# ------------------------------------------------------------------------------ pods: non-root, resources


def _pod_specs(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield path, node
        for key, value in node.items():
            yield from _pod_specs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _pod_specs(item, f"{path}[{index}]")


def _containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, container, pod securityContext) for every container a manifest would run."""
    if doc.get("apiVersion") == "argoproj.io/v1alpha1" and doc.get("kind") in ("Workflow", "WorkflowTemplate"):
        spec = doc["spec"]
        for template in spec.get("templates", []):
            for key in ("container", "script"):
                if key in template:
                    yield f"templates.{template['name']}", template[key], spec.get("securityContext") or {}
    for path, spec in _pod_specs(doc):
        for key in ("initContainers", "containers"):
            for container in spec.get(key) or []:
                yield f"{path}.{key}.{container.get('name')}", container, spec.get("securityContext") or {}


CONTAINERS = [(f"{where}:{inner}", container, pod) for where, doc in ALL_CLUSTER_DOCS
              for inner, container, pod in _containers(doc)]


def test_containers_are_found() -> None:
    assert any("mlflow-sqlite" in where for where, _, _ in CONTAINERS)
    assert any("ray-head" in where for where, _, _ in CONTAINERS)
    assert any("templates.data" in where for where, _, _ in CONTAINERS)


@pytest.mark.parametrize(("where", "container", "pod"), CONTAINERS, ids=[w for w, _, _ in CONTAINERS])
def test_container_is_non_root_with_requests_and_limits(where: str, container: dict[str, Any],
                                                        pod: dict[str, Any]) -> None:
    own = container.get("securityContext") or {}
    assert own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
    assert own.get("runAsUser", pod.get("runAsUser", 1)) != 0, f"{where}: runs as uid 0"
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(kind) or {}), f"{where}: {kind} need cpu and memory"


@pytest.mark.parametrize(("where", "container", "pod"), CONTAINERS, ids=[w for w, _, _ in CONTAINERS])
def test_container_passes_restricted_pod_security(where: str, container: dict[str, Any], pod: dict[str, Any]) -> None:
    """`ferry` and `ferry-system` enforce the restricted standard: the API server rejects anything less."""
    assert _restricted_problems(container.get("securityContext") or {}, pod) == [], where


def _restricted_problems(own: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    problems = []
    if own.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
        problems.append("runAsNonRoot")
    if own.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation: false")
    if "ALL" not in (own.get("capabilities") or {}).get("drop", []):
        problems.append("capabilities.drop: [ALL]")
    seccomp = (own.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile RuntimeDefault")
    if own.get("privileged"):
        problems.append("privileged")
    return problems


def _kuberay_generated_pods() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Containers KubeRay adds on its own: the RayJob submitter (K8sJobMode) and the autoscaler sidecar."""
    found = []
    for where, doc in _rendered_prod_documents():
        if doc.get("apiVersion") != "ray.io/v1":
            continue
        spec = doc["spec"]
        if doc["kind"] == "RayJob" and spec.get("submissionMode", "K8sJobMode") == "K8sJobMode":
            template = (spec.get("submitterPodTemplate") or {}).get("spec") or {}
            for container in template.get("containers") or [{}]:
                found.append((f"{where}:submitter", container.get("securityContext") or {},
                              template.get("securityContext") or {}))
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or {}
        if cluster.get("enableInTreeAutoscaling"):
            head_pod = cluster["headGroupSpec"]["template"]["spec"].get("securityContext") or {}
            found.append((f"{where}:autoscaler", (cluster.get("autoscalerOptions") or {}).get("securityContext") or {},
                          head_pod))
    return found


def test_pods_kuberay_adds_pass_restricted_pod_security() -> None:
    problems = {where: p for where, own, pod in _kuberay_generated_pods() if (p := _restricted_problems(own, pod))}
    assert problems == {}


# --------------------------------------------------------------------------------------------- kustomize


def test_kustomization_lists_every_base_manifest() -> None:
    [kustomization] = _load(DEPLOY / "kustomization.yaml")
    expected = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == expected
    assert "namespace" not in kustomization, "objects name their own namespaces"


# ------------------------------------------------------------------------------------------- Dockerfile


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def _build_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for instruction, rest in _dockerfile():
        if instruction == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args.setdefault(key, value)
    return args


def test_dockerfile_bases_are_pinned() -> None:
    args = _build_args()
    stages: set[str] = set()
    images: list[str] = []
    for instruction, rest in _dockerfile():
        if instruction != "FROM":
            continue
        parts = rest.split()
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
        if image not in stages and not image.startswith("base-"):  # base-${VARIANT}: a stage chosen by argument
            images.append(image)
        if len(parts) == 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and "/" not in tag, f"{image}: no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: pin a versioned tag"
    assert any(i.startswith("python:3.11.") and "slim" in i for i in images)
    assert any(i.startswith("nvidia/cuda:") and "runtime" in i for i in images)
    assert {f"base-{v}" for v in ("cpu", "cuda")} <= stages
    assert args["VARIANT"] == "cpu"


def test_dockerfile_runs_as_non_root_without_healthcheck_or_secrets() -> None:
    instructions = _dockerfile()
    users = [rest for instruction, rest in instructions if instruction == "USER"]
    assert users, "the image must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user == str(pods.NON_ROOT_UID)
    assert all(instruction != "HEALTHCHECK" for instruction, _ in instructions)
    for instruction, rest in instructions:
        if instruction in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY)\w*=", rest, re.I), rest
    assert any("ferry[ml]" in rest for instruction, rest in instructions if instruction == "RUN")
