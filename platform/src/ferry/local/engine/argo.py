"""Reading a rendered Argo Workflow (+ the WorkflowTemplate it references) into what the runner needs.

Only the subset ferry renders is accepted, and anything else fails loudly before a step runs: a DAG
entrypoint whose tasks use `dependencies` (not `depends`), container templates, and resource templates
that create a KubeRay RayJob. Parameters are merged the Argo way: the template's arguments are defaults,
the Workflow's arguments override them by name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferry.contract.durations import parse_duration_s
from ferry.local.engine import expr
from ferry.local.errors import LocalError

WORKFLOW_FILE = "workflow.yaml"
TEMPLATE_FILE = "workflowtemplate.yaml"
POLICIES = ("Always", "OnFailure", "OnError", "OnTransientError")


def parse_duration(value: str | int | float | None) -> float | None:
    """Go/Argo durations ('10s', '5m', '1h30m', '500ms'); a bare number is seconds."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise LocalError(str(exc)) from None


@dataclass(frozen=True)
class RetryStrategy:
    """Argo's retryStrategy: `limit` retries after the first attempt, gated by policy and expression."""

    limit: int = 0
    policy: str = "OnFailure"
    expression: str | None = None
    duration_s: float = 0.0
    factor: float = 1.0
    max_duration_s: float | None = None

    @classmethod
    def from_template(cls, template: dict[str, Any]) -> RetryStrategy | None:
        raw = template.get("retryStrategy")
        if raw is None:
            return None
        policy = raw.get("retryPolicy", "OnFailure")
        if policy not in POLICIES:
            raise LocalError(f"template {template.get('name')}: unknown retryPolicy {policy!r}")
        backoff = raw.get("backoff") or {}
        return cls(limit=int(raw.get("limit", 0)), policy=policy, expression=raw.get("expression"),
                   duration_s=parse_duration(backoff.get("duration")) or 0.0,
                   factor=float(backoff.get("factor", 1) or 1),
                   max_duration_s=parse_duration(backoff.get("maxDuration")))

    def delay_s(self, retry: int, scale: float = 1.0) -> float:
        """Wait before retry number `retry` (0 = first retry): duration x factor^retry, capped."""
        delay = self.duration_s * self.factor ** retry
        if self.max_duration_s is not None:
            delay = min(delay, self.max_duration_s)
        return delay * scale

    def allows(self, *, retries_done: int, phase: str, exit_code: int | None, message: str,
               transient: bool) -> bool:
        """Whether a failed attempt gets another one (Argo: policy AND expression, within limit)."""
        if retries_done >= self.limit or phase not in ("Failed", "Error"):
            return False
        policy_ok = {
            "Always": True,
            "OnFailure": phase == "Failed",
            "OnError": phase == "Error",
            "OnTransientError": phase == "Error" and transient,
        }[self.policy]
        if not policy_ok:
            return False
        if not self.expression:
            return True
        variables = {"lastRetry.status": phase, "lastRetry.message": message,
                     "lastRetry.exitCode": str(-1 if exit_code is None else exit_code)}
        return expr.evaluate(self.expression, variables)


@dataclass(frozen=True)
class Task:
    name: str
    template: str
    dependencies: tuple[str, ...] = ()
    when: str | None = None
    arguments: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadedWorkflow:
    """A Workflow as the runner executes it."""

    workflow: dict[str, Any]  # the Workflow object as written (metadata, spec)
    spec: dict[str, Any]  # the effective spec: template spec overlaid with the Workflow's
    name: str
    parameters: dict[str, str]
    templates: dict[str, dict[str, Any]]
    tasks: list[Task]  # in a dependency order
    mutexes: list[str]

    @property
    def deadline_s(self) -> float | None:
        return parse_duration(self.spec.get("activeDeadlineSeconds"))


def _read_docs(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except FileNotFoundError as exc:
        raise LocalError(f"{path} not found (run `ferry render` first?)") from exc
    except yaml.YAMLError as exc:
        raise LocalError(f"{path}: invalid YAML: {exc}") from exc
    return docs


def _find(docs: list[dict[str, Any]], kind: str, path: Path) -> dict[str, Any]:
    for doc in docs:
        if doc.get("kind") == kind:
            return doc
    raise LocalError(f"{path}: no {kind} in this file")


def load_workflow(workflow_dir: Path) -> LoadedWorkflow:
    """Read `workflow.yaml` (and the WorkflowTemplate it references from the same folder).

    `workflow_dir` may also be the workflow.yaml itself."""
    if workflow_dir.is_file():
        workflow_dir = workflow_dir.parent
    wf_path = workflow_dir / WORKFLOW_FILE
    workflow = _find(_read_docs(wf_path), "Workflow", wf_path)
    name = (workflow.get("metadata") or {}).get("name")
    if not name:
        raise LocalError(f"{wf_path}: the Workflow needs metadata.name (a stable name is what resumes a run)")
    spec = _effective_spec(workflow, workflow_dir)
    templates = {t["name"]: t for t in spec.get("templates", [])}
    entry = templates.get(spec.get("entrypoint", ""))
    if entry is None or "dag" not in entry:
        raise LocalError(f"{name}: the entrypoint {spec.get('entrypoint')!r} must be a DAG template")
    tasks = _tasks(entry, templates, name)
    for task in tasks:
        check_template(templates[task.template], name)
    return LoadedWorkflow(workflow=workflow, spec=spec, name=name, parameters=_parameters(spec, name),
                          templates=templates, tasks=tasks, mutexes=_mutexes(spec))


def _effective_spec(workflow: dict[str, Any], workflow_dir: Path) -> dict[str, Any]:
    wf_spec = copy.deepcopy(workflow.get("spec") or {})
    ref = wf_spec.pop("workflowTemplateRef", None)
    if ref is None:
        return wf_spec
    tpl_path = workflow_dir / TEMPLATE_FILE
    template = _find(_read_docs(tpl_path), "WorkflowTemplate", tpl_path)
    if template.get("metadata", {}).get("name") != ref.get("name"):
        raise LocalError(f"the Workflow references WorkflowTemplate {ref.get('name')!r} but {tpl_path} "
                         f"defines {template.get('metadata', {}).get('name')!r}")
    spec = copy.deepcopy(template.get("spec") or {})
    overrides = {p["name"]: p for p in (wf_spec.pop("arguments", {}) or {}).get("parameters", [])}
    merged = [{**p, **overrides.pop(p["name"], {})} for p in spec.get("arguments", {}).get("parameters", [])]
    spec["arguments"] = {"parameters": merged + list(overrides.values())}
    spec.update(wf_spec)
    return spec


def _parameters(spec: dict[str, Any], name: str) -> dict[str, str]:
    result = {}
    for param in (spec.get("arguments") or {}).get("parameters", []):
        if "value" not in param:
            raise LocalError(f"{name}: workflow parameter {param.get('name')!r} has no value "
                             "(valueFrom is not supported locally)")
        result[param["name"]] = str(param["value"])
    return result


def _mutexes(spec: dict[str, Any]) -> list[str]:
    sync = spec.get("synchronization") or {}
    found = [m["name"] for m in sync.get("mutexes") or [] if m.get("name")]
    if (sync.get("mutex") or {}).get("name"):  # the pre-3.6 single form
        found.append(sync["mutex"]["name"])
    return found


def _tasks(entry: dict[str, Any], templates: dict[str, dict[str, Any]], wf: str) -> list[Task]:
    tasks = []
    for raw in entry["dag"].get("tasks", []):
        if "depends" in raw:
            raise LocalError(f"{wf}: task {raw.get('name')!r} uses `depends`; only `dependencies` is supported")
        if raw.get("template") not in templates:
            raise LocalError(f"{wf}: task {raw.get('name')!r} uses unknown template {raw.get('template')!r}")
        args = {p["name"]: str(p.get("value", "")) for p in (raw.get("arguments") or {}).get("parameters", [])}
        tasks.append(Task(name=raw["name"], template=raw["template"],
                          dependencies=tuple(raw.get("dependencies") or ()), when=raw.get("when"),
                          arguments=args))
    return topological(tasks, wf)


def topological(tasks: list[Task], wf: str = "workflow") -> list[Task]:
    """Tasks in an order where every dependency comes first (declaration order among equals)."""
    by_name = {t.name: t for t in tasks}
    for task in tasks:
        missing = [d for d in task.dependencies if d not in by_name]
        if missing:
            raise LocalError(f"{wf}: task {task.name!r} depends on unknown task(s) {', '.join(missing)}")
    ordered: list[Task] = []
    done: set[str] = set()
    while len(ordered) < len(tasks):
        ready = [t for t in tasks if t.name not in done and all(d in done for d in t.dependencies)]
        if not ready:
            cycle = sorted(t.name for t in tasks if t.name not in done)
            raise LocalError(f"{wf}: dependency cycle among tasks {', '.join(cycle)}")
        for task in ready:
            ordered.append(task)
            done.add(task.name)
    return ordered


def check_template(template: dict[str, Any], wf: str) -> None:
    name = template.get("name")
    if "container" in template:
        if not template["container"].get("command"):
            raise LocalError(f"{wf}: container template {name!r} needs a command (images are not run locally)")
        return
    if "resource" in template:
        resource = template["resource"]
        manifest = yaml.safe_load(resource.get("manifest") or "") or {}
        if resource.get("action") != "create" or manifest.get("kind") != "RayJob":
            raise LocalError(f"{wf}: resource template {name!r} must create a RayJob to run locally "
                             f"(found action {resource.get('action')!r}, kind {manifest.get('kind')!r})")
        if not (manifest.get("spec") or {}).get("entrypoint"):
            raise LocalError(f"{wf}: RayJob in template {name!r} has no spec.entrypoint")
        return
    kinds = sorted(set(template) & {"dag", "steps", "script", "suspend", "http", "plugin", "data"})
    raise LocalError(f"{wf}: template {name!r} of kind {', '.join(kinds) or 'unknown'} is not supported locally")
