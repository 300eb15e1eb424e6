"""The kind e2e (.github/workflows/e2e.yml) installs what it applies, at the pinned versions.

kubectl resolves the kind of every object in a file before anything else (a `-l` filter included), so one object
whose CRD is missing fails the whole apply. Here every kind the e2e applies or dry-runs, read from the files and
folders it names (and the RayJobs its WorkflowTemplates create), must have its CRD installed by an earlier step
of the same job; and every `helm install` must name its chart's pinned version literally
(gitops/platform/charts.toml, equal to the Applications' targetRevision: tests/golden/test_chart_pins.py).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.platform_docs import _chart_table

ROOT = Path(__file__).resolve().parents[2]
E2E = ROOT / ".github" / "workflows" / "e2e.yml"
E2E_SCRIPTS = sorted((ROOT / "platform" / "deploy" / "e2e").glob("*.sh"))

# The custom resources each chart installs (its crds/ or CRD templates, at the pinned version), as (group, kind).
CHART_KINDS: dict[str, set[tuple[str, str]]] = {
    # argo-helm charts/argo-cd: templates/crds (Application, ApplicationSet, AppProject).
    "argo-cd": {("argoproj.io", "Application"), ("argoproj.io", "ApplicationSet"), ("argoproj.io", "AppProject")},
    # argo-helm charts/argo-workflows with crds.install (the app's values): the Workflow family.
    "argo-workflows": {("argoproj.io", kind) for kind in (
        "Workflow", "WorkflowTemplate", "CronWorkflow", "ClusterWorkflowTemplate", "WorkflowEventBinding",
        "WorkflowTaskSet", "WorkflowTaskResult", "WorkflowArtifactGCTask")},
    # argo-helm charts/argo-events with crds.install: EventBus, EventSource, Sensor.
    "argo-events": {("argoproj.io", "EventBus"), ("argoproj.io", "EventSource"), ("argoproj.io", "Sensor")},
    # kuberay helm-chart/kuberay-operator/crds (v1.7.0).
    "kuberay-operator": {("ray.io", "RayCluster"), ("ray.io", "RayJob"), ("ray.io", "RayService"),
                         ("ray.io", "RayCronJob")},
    # prometheus-community kube-prometheus-stack with crds.enabled: the Prometheus Operator's CRDs.
    "kube-prometheus-stack": {("monitoring.coreos.com", kind) for kind in (
        "Alertmanager", "AlertmanagerConfig", "PodMonitor", "Probe", "Prometheus", "PrometheusAgent",
        "PrometheusRule", "ScrapeConfig", "ServiceMonitor", "ThanosRuler")},
    "mlflow": set(),
    "redis": set(),  # CloudPirates charts/redis: a StatefulSet, Services, a ConfigMap; no CRD
}
# API groups the API server serves itself: no CRD needed.
BUILT_IN_GROUPS = {"", "apps", "batch", "rbac.authorization.k8s.io", "networking.k8s.io", "policy",
                   "apiextensions.k8s.io", "admissionregistration.k8s.io", "autoscaling", "coordination.k8s.io",
                   "scheduling.k8s.io", "storage.k8s.io"}
HELM_INSTALL = re.compile(r"\bhelm (?:upgrade --install|install) (\S+) (\S+)(.*)")


def _load_workflow(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return dict(doc)


def _commands(run: str, env: dict[str, str]) -> list[str]:
    """The run block's commands, continuation lines joined and ${VAR} of the workflow's env expanded."""
    text = run.replace("\\\n", " ")
    for name, value in env.items():
        text = text.replace(f"${{{name}}}", str(value))
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _applied_paths(command: str) -> list[str]:
    """The files and folders a `kubectl apply|create` reads: -f/-k arguments; for `-f -`, the YAML file piped in."""
    if not re.search(r"\bkubectl (?:-n \S+ )?(?:apply|create)\b.* -[fk]\b", command):
        return []
    left, _, right = command.rpartition("|") if "| kubectl" in command else ("", "", command)
    tokens = shlex.split(right)
    paths = [tokens[i + 1] for i, token in enumerate(tokens[:-1]) if token in ("-f", "-k", "--filename")]
    if "-" in paths:
        paths.remove("-")
        paths += [token for token in shlex.split(left) if token.endswith(".yaml")][-1:]
    return paths


def _documents(path: Path) -> list[dict[str, Any]]:
    if (path / "kustomization.yaml").is_file():
        kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
        return [doc for resource in kustomization.get("resources", []) for doc in _documents(path / resource)]
    files = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
    docs = [doc for file in files for doc in yaml.safe_load_all(file.read_text()) if doc]
    embedded = [yaml.safe_load(template["resource"]["manifest"]) for doc in docs
                for template in (doc.get("spec") or {}).get("templates", []) if "resource" in template]
    return docs + embedded


def _group_kind(doc: dict[str, Any]) -> tuple[str, str]:
    api_version = str(doc["apiVersion"])
    return (api_version.rpartition("/")[0] if "/" in api_version else "", str(doc["kind"]))


Order = tuple[int, int]  # (step, command within the step): what runs before what in the job


def _plan(workflow: dict[str, Any]) -> tuple[list[tuple[Order, str, str]], list[tuple[Order, str]]]:
    """(order, chart, the rest of the command) for every helm install; (order, path) for every applied path."""
    env = {key: str(value) for key, value in workflow.get("env", {}).items()}
    installs, applies = [], []
    for index, step in enumerate(workflow["jobs"]["e2e"]["steps"]):
        for number, command in enumerate(_commands(step.get("run", ""), env)):
            if match := HELM_INSTALL.search(command):
                chart = match.group(2)  # an OCI chart is named by its reference; the table by the chart's name
                installs.append(((index, number), chart.rsplit("/", 1)[-1] if chart.startswith("oci://") else chart,
                                 match.group(3)))
            applies += [((index, number), path) for path in _applied_paths(command)]
    return installs, applies


def _violations(workflow: dict[str, Any]) -> list[str]:
    installs, applies = _plan(workflow)
    table = _chart_table()
    found = []
    for (index, _), chart, rest in installs:
        version = re.search(r"--version\s+(\S+)", rest)
        pinned = table.get(chart, {}).get("version")
        if version is None or version.group(1) != pinned:
            found.append(f"step {index}: helm install {chart} must say --version {pinned} (charts.toml), "
                         f"not {version.group(1) if version else 'nothing'}")
    for order, path in applies:
        index = order[0]
        installed = set().union(*(CHART_KINDS.get(chart, set()) for at, chart, _ in installs if at < order))
        if not (ROOT / path).exists():
            found.append(f"step {index}: applies {path}, which does not exist")
            continue
        for doc in _documents(ROOT / path):
            group, kind = _group_kind(doc)
            if group not in BUILT_IN_GROUPS and (group, kind) not in installed:
                found.append(f"step {index}: {path} holds a {kind} ({group}) but no earlier step installs its CRD")
    return found


def test_every_applied_kind_has_its_crd_installed_first_at_the_pinned_versions() -> None:
    assert _violations(_load_workflow(E2E)) == []


def test_the_e2e_applies_the_model_its_events_and_argocd_objects() -> None:
    workflow = _load_workflow(E2E)
    installs, applies = _plan(workflow)
    model = workflow["env"]["MODEL"]
    applied = {path for _, path in applies}
    assert {"gitops/rendered/prod/_argocd", f"gitops/rendered/prod/{model}", "platform/deploy"} <= applied
    assert {chart for _, chart, _ in installs} == set(CHART_KINDS) == set(_chart_table())


def test_the_check_fails_on_the_e2e_before_issue_13() -> None:
    """The e2e before this check: it dry-ran _argocd and applied the model folder with no Argo Events or
    Prometheus Operator CRDs, and read chart versions at run time instead of naming the pins."""
    old = subprocess.run(["git", "show", "616fe51:.github/workflows/e2e.yml"], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    if old.returncode != 0:
        pytest.skip("git history not available")
    found = "\n".join(_violations(yaml.safe_load(old.stdout)))
    for needle in ("EventBus", "EventSource", "Sensor", "PodMonitor", "PrometheusRule",
                   "helm install argo-workflows must say --version 2.0.4"):
        assert needle in found, needle


def test_chart_kinds_table_covers_the_schemas_the_renders_validate_against() -> None:
    """Every custom kind ferry renders is one some chart installs (a new kind needs a row above)."""
    rendered = {_group_kind(doc) for doc in _documents(ROOT / "gitops" / "rendered" / "prod")}
    custom = {gk for gk in rendered if gk[0] not in BUILT_IN_GROUPS}
    assert custom <= set().union(*CHART_KINDS.values()), custom - set().union(*CHART_KINDS.values())


@pytest.mark.parametrize("script", E2E_SCRIPTS, ids=[p.name for p in E2E_SCRIPTS])
def test_e2e_scripts_pass_shellcheck(script: Path) -> None:
    shellcheck = subprocess.run(["which", "shellcheck"], capture_output=True, text=True, check=False).stdout.strip()
    if not shellcheck:
        pytest.skip("shellcheck not installed")
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
