"""Static checks of ferry's cluster install: the Argo CD app-of-apps in gitops/platform and the Argo CD health
checks. Objects are validated strictly against the vendored schemas (tests/support/kube_schemas.py) and
checked against the rules in docs/install-cluster.md; RBAC, network policies and pods are in
test_platform_security.py. Nothing here talks to a cluster."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from tests.support.binaries import dev_module
from tests.support.kube_schemas import supported_kinds, validate_object
from tests.support.platform_docs import (
    APPS,
    MANIFESTS,
    PLATFORM,
    PROD,
    ROOT,
    VALIDATED_DOCS,
    _apps,
    _by_kind,
    _chart_table,
    _ids,
    _load,
    _name,
)

# Documents that have no schema on purpose. Anything else without a schema fails: a new kind must be added
# to tests/support/kube_schemas.py (or here, with a reason).
ALLOWED_WITHOUT_SCHEMA = {
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),  # kustomize's own file, never sent to the API server
}

# Pinned charts: (repoURL, chart) -> version, from the table of verified versions (gitops/platform/charts.toml,
# checked against the Applications by tests/golden/test_chart_pins.py). Changing a pin is a change of that table.
CHART_PINS = {(chart["repo"], name): chart["version"] for name, chart in _chart_table().items()
              if chart["application"]}

WAVE = "argocd.argoproj.io/sync-wave"
HEALTH = "resource.customizations.health."


@pytest.fixture(scope="module")
def schema_kinds() -> frozenset[tuple[str, str]]:
    return supported_kinds()


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
    errors = validate_object(broken)
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
    lupa = dev_module("lupa")  # a Lua runtime, to run the health checks as Argo CD does
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
