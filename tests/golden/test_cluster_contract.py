"""What Argo Workflows v4.1 and KubeRay v1.7 do with the rendered objects, beyond schema validity.

Tables here are written from the upstream sources, not from ferry's code, so a rendered object that
disagrees with them fails: which RayJob states are terminal failures (kuberay rayjob_types.go and
rayjob_controller.go), and how long each kind's name may be (argo-workflows validate.go, kuberay
utils/constant.go, argo-events resource.go, Kubernetes name validation).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.contract import names
from ferry.local.engine.conditions import failure_holds, success_holds
from ferry.render.bundle import render_objects
from ferry.spec import load_specs
from ferry.spec.models import MAX_NAME_LENGTH

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted((ROOT / "gitops/models").glob("*.yaml"))

# Every end of a RayJob KubeRay v1.7 reports, as `.status` fields (jobStatus is left empty where the controller
# never saw the Ray job: validation, a deadline or a failed submission before it started).
RAYJOB_FAILURES = [
    {"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed"},
    {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"},
    {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "jobStatus": "RUNNING"},
    {"jobDeploymentStatus": "Failed", "reason": "PreRunningDeadlineExceeded", "jobStatus": "PENDING"},
    {"jobDeploymentStatus": "Failed", "reason": "SubmissionFailed"},
    {"jobDeploymentStatus": "Failed", "reason": "JobStatusCheckTimeoutExceeded", "jobStatus": "RUNNING"},
    {"jobDeploymentStatus": "Failed", "reason": "AppFailed", "jobStatus": "FAILED"},
    {"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"},
    {"jobDeploymentStatus": "Failed", "reason": "JobDeploymentStatusTransitionGracePeriodExceeded",
     "jobStatus": "FAILED"},
]
RAYJOB_SUCCESSES = [{"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}]
RAYJOB_RUNNING = [{}, {"jobDeploymentStatus": "Initializing"},
                  {"jobDeploymentStatus": "Running", "jobStatus": "PENDING"},
                  {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}]
TERMINAL = {"RayJob": (RAYJOB_FAILURES, RAYJOB_SUCCESSES, RAYJOB_RUNNING)}

# The longest name each kind accepts, and whether it must be a DNS-1035 label (letter first, no dots).
NAME_RULES: dict[str, tuple[int, bool]] = {
    "Workflow": (63, False), "WorkflowTemplate": (63, False), "CronWorkflow": (52, False),
    "Sensor": (63, False), "EventSource": (47, True), "RayJob": (47, True), "RayService": (47, True),
    "RayCluster": (53, True), "Service": (63, True), "Application": (63, False),
}
SUBDOMAIN = (253, False)
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
RANDOM = "x" * 5  # what generateName appends (Kubernetes apiserver)
UNIX_TIME = "1" * 10  # CronWorkflow children: `<cron>-<unix seconds>`


def _objects(tree: Any) -> Iterator[dict[str, Any]]:
    """Every Kubernetes object in a rendered tree, including the manifests resource templates create."""
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


def _resource_templates(objects: dict[str, list[dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for file, docs in objects.items():
        for doc in docs:
            if doc["kind"] == "WorkflowTemplate":
                for template in doc["spec"]["templates"]:
                    if "resource" in template:
                        yield f"{file}:{template['name']}", template


def _rendered(env: str) -> dict[str, list[dict[str, Any]]]:
    models = [spec.model for spec in load_specs(MODELS)[0]]
    return render_objects(models, env)  # type: ignore[arg-type]


@pytest.mark.parametrize("env", ["prod", "local"])
def test_every_resource_step_fails_on_every_terminal_failure_and_has_a_bound(env: str) -> None:
    checked = 0
    for where, template in _resource_templates(_rendered(env)):
        resource = template["resource"]
        kind = yaml.safe_load(resource["manifest"])["kind"]
        failures, successes, running = TERMINAL[kind]  # a kind missing here needs its table
        for status in failures:
            assert failure_holds(resource.get("failureCondition"), {"status": status}), (where, status)
        for status in successes:
            obj = {"status": status}
            assert success_holds(resource.get("successCondition"), obj), (where, status)
            assert not failure_holds(resource.get("failureCondition"), obj), (where, status)
        for status in running:
            obj = {"status": status}
            assert not failure_holds(resource.get("failureCondition"), obj), (where, status)
            assert not success_holds(resource.get("successCondition"), obj), (where, status)
        bound = template.get("activeDeadlineSeconds") or template.get("timeout")
        assert bound, f"{where}: a resource step needs its own activeDeadlineSeconds or timeout"
        own = yaml.safe_load(resource["manifest"])["spec"].get("activeDeadlineSeconds")
        assert own is None or int(bound) > int(own), f"{where}: the step ends before its {kind} can report"
        checked += 1
    assert checked >= 2 * len(MODELS) - 1


def _longest_spec(tmp_path: Path) -> Path:
    """The repo's fullest spec (tune, schedule, drift) under the longest name the spec accepts."""
    text = (ROOT / "gitops/models/fraud-detector.yaml").read_text()
    name = ("m" + "-long-model-name" * 3)[:MAX_NAME_LENGTH - 1] + "z"
    path = tmp_path / "long.yaml"
    path.write_text(re.sub(r"(?m)^(\s+name:\s*)fraud-detector\s*$", rf"\g<1>{name}", text, count=1))
    return path


def _names_of(obj: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, name) of an object and of what its controller creates from it, at the longest generated name."""
    meta, kind = obj["metadata"], obj["kind"]
    name = meta.get("name") or meta["generateName"] + RANDOM
    yield kind, name
    if kind == "CronWorkflow":
        yield "Workflow", f"{name}-{UNIX_TIME}"
    elif kind == "RayService":
        yield "RayCluster", f"{name}-{RANDOM}"
        yield "Service", f"{name}-serve-svc"
        yield "Service", f"{name}-{RANDOM}-head-svc"
    elif kind == "RayJob":
        yield "RayCluster", f"{name}-{RANDOM}"
        yield "Service", f"{name}-{RANDOM}-head-svc"
    elif kind == "EventSource":
        yield "Service", f"{name}-eventsource-svc"


def test_every_generated_name_fits_its_kind_at_the_longest_model_name(tmp_path: Path) -> None:
    [loaded], _ = load_specs([_longest_spec(tmp_path)])
    model = loaded.model.metadata.name
    assert len(model) == MAX_NAME_LENGTH
    objects = [obj for docs in render_objects([loaded.model], "prod").values() for obj in _objects(docs)]
    found = [pair for obj in objects for pair in _names_of(obj)]
    found += [("Workflow", names.retrain_workflow_prefix(model, t) + RANDOM) for t in names.TRIGGERS]
    found.append(("Application", names.application_name(model)))
    runs = [name for kind, name in found if kind == "Workflow"]
    longest_run = max(runs, key=len)
    kinds = {kind for kind, _ in found}
    assert {"RayJob", "CronWorkflow", "Sensor", "EventSource", "RayService"} <= kinds
    for kind, raw in found:
        name = raw.replace("{{workflow.name}}", longest_run)
        limit, dns_1035 = NAME_RULES.get(kind, SUBDOMAIN)
        assert len(name) <= limit, f"{kind} {name!r} has {len(name)} characters; {kind} allows {limit}"
        pattern = DNS_1035 if dns_1035 else DNS_1123_SUBDOMAIN
        assert pattern.match(name), f"{kind} {name!r} is not a valid {kind} name"
    for obj in objects:
        for key, value in (obj["metadata"].get("labels") or {}).items():
            value = str(value).replace("{{workflow.name}}", longest_run)
            assert len(value) <= 63, f"{obj['kind']} label {key}={value!r} is over 63 characters"


def test_rayjob_names_stay_distinct_and_link_back_to_their_run() -> None:
    a, b = "a" + "b" * 38 + "c", "a" + "b" * 38 + "d"
    assert names.rayjob_prefix(a, names.STEP_TRAIN) != names.rayjob_prefix(b, names.STEP_TRAIN)
    assert names.rayjob_prefix("fraud-detector", names.STEP_TUNE) == "fraud-detector-tune-"
    template = next(t for _, t in _resource_templates(_rendered("prod")) if t["name"] == names.STEP_TRAIN)
    labels = yaml.safe_load(template["resource"]["manifest"])["metadata"]["labels"]
    assert labels[names.LABEL_WORKFLOW] == "{{workflow.name}}"
