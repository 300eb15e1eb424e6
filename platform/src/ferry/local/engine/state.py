"""Run state in Argo's status shape, persisted at `.ferry/runs/<workflow>/workflow.json`.

The file holds the Workflow object with a `status` like `argo get -o json` shows: phase, timestamps,
progress and `nodes` keyed by id (the DAG root, one node per task, and for tasks with a retryStrategy a
`Retry` node whose children are the attempts). Every change is written atomically (temp file +
os.replace), so a reader (`ferry runs show`) or a killed runner never sees half a file, and resuming
reads back exactly what finished.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferry.local.engine.argo import LoadedWorkflow, Task
from ferry.local.errors import LocalError
from ferry.settings import Settings

Status = dict[str, Any]
Node = dict[str, Any]
DONE = ("Succeeded", "Skipped")
FINAL = ("Succeeded", "Failed", "Error", "Skipped", "Omitted")
INTERRUPTED = "interrupted: the runner stopped while this ran"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node_id(workflow: str, node_name: str) -> str:
    """Argo's scheme: the workflow name plus the FNV-1a 32-bit hash of the node name."""
    digest = 0x811C9DC5
    for byte in node_name.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{workflow}-{digest}"


def run_dir(settings: Settings, workflow: str) -> Path:
    return settings.runs_dir / workflow


def status_path(settings: Settings, workflow: str) -> Path:
    return run_dir(settings, workflow) / "workflow.json"


def _node(node_id_: str, name: str, display: str, kind: str, template: str, boundary: str | None) -> Node:
    node: Node = {"id": node_id_, "name": name, "displayName": display, "type": kind,
                  "templateName": template, "phase": "Pending", "startedAt": None, "finishedAt": None,
                  "message": "", "outputs": {"parameters": []}, "children": []}
    if boundary:
        node["boundaryID"] = boundary
    return node


class RunState:
    """The persisted status of one run; all mutation goes through here, under one lock."""

    def __init__(self, settings: Settings, loaded: LoadedWorkflow,
                 on_update: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.settings = settings
        self.loaded = loaded
        self.name = loaded.name
        self.path = status_path(settings, self.name)
        self.on_update = on_update
        self.lock = threading.RLock()
        self.obj = self._load_or_create()

    # --- creation and resume ---------------------------------------------------------------------

    def _load_or_create(self) -> dict[str, Any]:
        previous = _read(self.path) if self.path.exists() else None
        obj = copy.deepcopy(self.loaded.workflow)
        fresh = self._fresh_status()
        obj["status"] = previous["status"] if previous and "status" in previous else fresh
        for key, node in fresh["nodes"].items():  # a task added since the last run starts Pending
            obj["status"]["nodes"].setdefault(key, node)
        obj["status"]["storedWorkflowTemplateSpec"] = self.loaded.spec
        return obj

    def _fresh_status(self) -> Status:
        wf = self.name
        entry = self.loaded.spec["entrypoint"]
        root = _node(wf, wf, wf, "DAG", entry, None)
        nodes = {wf: root}
        for task in self.loaded.tasks:
            kind = "Retry" if self.loaded.templates[task.template].get("retryStrategy") else "Pod"
            node = _node(node_id(wf, f"{wf}.{task.name}"), f"{wf}.{task.name}", task.name, kind,
                         task.template, wf)
            nodes[node["id"]] = node
            if not task.dependencies:
                root["children"].append(node["id"])
        return {"phase": "Pending", "startedAt": None, "finishedAt": None, "message": "",
                "progress": f"0/{len(self.loaded.tasks)}", "nodes": nodes}

    @property
    def status(self) -> Status:
        return self.obj["status"]

    @property
    def phase(self) -> str:
        return str(self.status["phase"])

    def task_node(self, task: str) -> Node:
        return self.status["nodes"][node_id(self.name, f"{self.name}.{task}")]

    def begin(self) -> None:
        """(Re)start: finished tasks stay as they are, everything else becomes Pending again."""
        with self.lock:
            for task in self.loaded.tasks:
                node = self.task_node(task.name)
                if node["phase"] in DONE:
                    continue
                for child in node["children"] if node["type"] == "Retry" else []:
                    attempt = self.status["nodes"].get(child)
                    if attempt and attempt["phase"] in ("Pending", "Running"):
                        attempt.update(phase="Error", message=INTERRUPTED, finishedAt=now())
                node.update(phase="Pending", message="", finishedAt=None)
            root = self.status["nodes"][self.name]
            root.update(phase="Running", startedAt=root["startedAt"] or now(), finishedAt=None, message="")
            self.status.update(phase="Running", startedAt=self.status["startedAt"] or now(),
                               finishedAt=None, message="")
            self.save()

    # --- mutation ---------------------------------------------------------------------------------

    def save(self) -> None:
        with self.lock:
            done = sum(1 for t in self.loaded.tasks if self.task_node(t.name)["phase"] in DONE)
            self.status["progress"] = f"{done}/{len(self.loaded.tasks)}"
            write_json(self.path, self.obj)
            snapshot = copy.deepcopy(self.obj)
        if self.on_update:
            self.on_update(snapshot)

    def set_phase(self, phase: str, message: str = "") -> None:
        with self.lock:
            self.status.update(phase=phase, message=message)
            self.save()

    def update_task(self, task: str, **fields: Any) -> None:
        with self.lock:
            self.task_node(task).update(fields)
            self.save()

    def new_attempt(self, task: Task) -> tuple[Node, int]:
        """The node an attempt reports into (the task node itself without retryStrategy) and its index."""
        with self.lock:
            node = self.task_node(task.name)
            if node["phase"] == "Pending":
                node.update(phase="Running", startedAt=now(), message="")
            if node["type"] != "Retry":
                self.save()
                return node, 0
            index = len(node["children"])
            name = f"{node['name']}({index})"
            attempt = _node(node_id(self.name, name), name, f"{task.name}({index})", "Pod", task.template,
                            self.name)
            attempt.update(phase="Running", startedAt=now())
            self.status["nodes"][attempt["id"]] = attempt
            node["children"].append(attempt["id"])
            self.save()
            return attempt, index

    def finish_node(self, node: Node, phase: str, message: str, outputs: list[dict[str, str]],
                    exit_code: int | None) -> None:
        with self.lock:
            node.update(phase=phase, message=message, finishedAt=now(), outputs={"parameters": outputs})
            if exit_code is not None:
                node["outputs"]["exitCode"] = str(exit_code)
            self.save()

    def finish_task(self, task: Task, phase: str, message: str, dependents: list[str]) -> None:
        """Close a task; like Argo, its dependents hang off its last node (the Pod, or the last attempt)."""
        with self.lock:
            node = self.task_node(task.name)
            attempts = node["children"] if node["type"] == "Retry" else []
            last = self.status["nodes"].get(attempts[-1]) if attempts else None
            if last is not None:
                node["outputs"] = copy.deepcopy(last["outputs"])
            boundary = last if last is not None else node
            ids = [self.task_node(d)["id"] for d in dependents]
            boundary["children"] = [*boundary.get("children", []), *[i for i in ids if i not in boundary["children"]]]
            started = node["startedAt"] or (None if phase == "Omitted" else now())
            node.update(phase=phase, message=message, finishedAt=now(), startedAt=started)
            self.save()

    def finish(self, phase: str, message: str) -> None:
        with self.lock:
            self.status["nodes"][self.name].update(phase=phase, finishedAt=now(), message=message)
            self.status.update(phase=phase, message=message, finishedAt=now())
            self.save()

    def outputs_of(self, task: str) -> dict[str, str]:
        node = self.task_node(task)
        return {p["name"]: p.get("value", "") for p in node.get("outputs", {}).get("parameters", [])}


def write_json(path: Path, obj: Any) -> None:
    """Atomic: a temp file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LocalError(f"cannot read run state {path}: {exc}; remove {path.parent} to forget that run") from exc


# --- reading runs (ferry runs / runs show / logs) ---------------------------------------------------

def list_runs(settings: Settings) -> list[dict[str, Any]]:
    """One summary per run, newest first: name, model, phase, startedAt, finishedAt, progress, message."""
    runs = []
    for path in sorted(settings.runs_dir.glob("*/workflow.json")):
        try:
            obj = _read(path)
        except LocalError:
            continue
        status = obj.get("status", {})
        labels = obj.get("metadata", {}).get("labels", {})
        runs.append({"name": obj.get("metadata", {}).get("name", path.parent.name),
                     "model": labels.get("ferry.dev/model", ""), "phase": status.get("phase", ""),
                     "startedAt": status.get("startedAt"), "finishedAt": status.get("finishedAt"),
                     "progress": status.get("progress", ""), "message": status.get("message", "")})
    return sorted(runs, key=lambda r: r["startedAt"] or "", reverse=True)


def load_run(settings: Settings, name: str) -> dict[str, Any]:
    """The Workflow object (with status) of run `name`."""
    path = status_path(settings, name)
    if not path.exists():
        known = ", ".join(r["name"] for r in list_runs(settings)) or "none yet"
        raise LocalError(f"no local run named {name!r} (runs: {known})")
    return _read(path)


def node_log_path(settings: Settings, name: str, task: str) -> Path:
    """Where the log of `task` in run `name` is (all attempts, one after the other)."""
    run = load_run(settings, name)
    tasks = [t["name"] for t in _dag_tasks(run)]
    if tasks and task not in tasks:
        raise LocalError(f"run {name!r} has no step {task!r} (steps: {', '.join(tasks)})")
    return log_path(settings, name, task)


def log_path(settings: Settings, workflow: str, task: str) -> Path:
    return run_dir(settings, workflow) / "logs" / f"{task}.log"


def outputs_dir(settings: Settings, workflow: str, task: str, attempt: int) -> Path:
    return run_dir(settings, workflow) / "outputs" / f"{task}-{attempt}"


def _dag_tasks(run: dict[str, Any]) -> list[dict[str, Any]]:
    spec = run.get("status", {}).get("storedWorkflowTemplateSpec") or run.get("spec", {})
    for template in spec.get("templates", []):
        if template.get("name") == spec.get("entrypoint") and "dag" in template:
            return list(template["dag"].get("tasks", []))
    return []
