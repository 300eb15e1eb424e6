"""Static security checks of ferry's cluster install (platform/deploy, gitops/platform and the rendered prod
objects): no RBAC wildcards and nothing cluster-wide, no credentials in git, restricted namespaces, default-deny
network policies, and non-root pods with requests and limits. Nothing here talks to a cluster."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.platform_docs import (
    ALL_CLUSTER_DOCS,
    DEPLOY,
    DOCKERFILE,
    MANIFESTS,
    PROD,
    ROOT,
    _apps,
    _by_kind,
    _documents,
    _load,
    _name,
    _rendered_prod_documents,
)

from ferry.render import pods

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


# An Argo CD repository Secret for a public registry holds settings only; these are all it may hold.
_PUBLIC_REPOSITORY_KEYS = {"name", "type", "url", "enableOCI", "project"}


def test_no_secret_values_in_git() -> None:
    for path in sorted([*(ROOT / "gitops").rglob("*.yaml"), *DEPLOY.rglob("*.yaml")]):
        for doc in _load(path):
            if doc.get("kind") != "Secret":
                continue
            labels = (doc.get("metadata") or {}).get("labels") or {}
            if labels.get("argocd.argoproj.io/secret-type") == "repository":
                assert not doc.get("data") and set(doc.get("stringData") or {}) <= _PUBLIC_REPOSITORY_KEYS, \
                    f"{path}: a repository Secret with credentials"
                continue
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


def test_redis_only_from_serving_pods() -> None:
    """The feature state store: 6379 from the serving pods of `ferry`, nothing else (not pipeline steps, not
    Tune/Train pods, not the rest of ferry-system)."""
    app = _apps()["redis"]["spec"]
    values = app["source"]["helm"]["valuesObject"]
    assert app["destination"]["namespace"] == "ferry-system" and values["networkPolicy"]["enabled"] is False
    auth = values["auth"]  # a Secret's name and key, no value
    assert (auth["enabled"], auth["existingSecret"]) == (True, "ferry-redis")  # pragma: allowlist secret
    assert set(auth) == {"enabled", "existingSecret", "existingSecretPasswordKey"}
    assert "maxmemory-policy noeviction" in values["config"]["content"], "lost state must fail loudly"
    redis_pods = {"matchLabels": {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "redis"}}
    reaching = []
    for spec in _policies("ferry-system").values():
        for rule in spec.get("ingress", []) if spec["podSelector"] in ({}, redis_pods) else []:
            ports = _ports(rule)
            if ports and 6379 not in ports:
                continue
            reaching += [(_namespace_of(peer), peer.get("podSelector")) for peer in rule.get("from", [{}])]
    assert reaching == [("ferry", {"matchLabels": {"app.kubernetes.io/component": "serving"}})]


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
