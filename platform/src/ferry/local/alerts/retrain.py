"""Retraining a model locally outside its spec's own run: a drift alert (the receiver), or a person.

`ferry up` runs `<model>-<spec hash>` once per hash, and the runner never runs a Succeeded workflow again.
A retraining run is the same rendered Workflow (gitops/rendered/local/<model>) under a new name,
`<model>-<trigger>-<UTC stamp>`, with the argument `trigger` and the label ferry.dev/trigger set. Steps find
their results by workflow name, so it fetches data, trains, evaluates against the champion and registers a
new version even though a version with this spec hash exists, and its rollout step runs the normal canary.

One retraining at a time per model, with the runner's own fcntl locks (.ferry/locks): `retrain-<model>`
is held for the whole run, and the model's Argo mutex (`ferry-model-<model>`) must be free when it
starts, so neither a second alert nor a running `ferry up` of the same model leads to a second training.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ferry.contract import names
from ferry.local.engine.argo import TEMPLATE_FILE, WORKFLOW_FILE
from ferry.local.engine.runner import run_workflow
from ferry.local.errors import LocalError
from ferry.local.supervisor import locks
from ferry.render.profiles import rendered_dir
from ferry.settings import Settings

OnUpdate = Callable[[dict[str, Any]], None]


class RetrainingBusy(LocalError):
    """A run of this model is active; nothing was started."""


@dataclass(frozen=True)
class RetrainResult:
    model: str
    workflow: str
    phase: str
    message: str


def retrain_dir(settings: Settings, workflow: str) -> Path:
    return settings.state_dir / "retrain" / workflow


def start_retraining(settings: Settings, model: str, reason: str, *, trigger: str = names.TRIGGER_MANUAL,
                     on_started: Callable[[str], None] | None = None,
                     on_update: OnUpdate | None = None) -> RetrainResult:
    """Run a retraining of `model` now and wait for it; raises RetrainingBusy when one is active.

    `reason` is recorded on the run (annotation ferry.dev/reason); `on_started` gets the workflow name
    once the run is committed to, before any step runs."""
    if trigger not in names.TRIGGERS:
        raise LocalError(f"unknown trigger {trigger!r}; one of {', '.join(names.TRIGGERS)}")
    source = settings.home / rendered_dir("local") / model
    if not (source / WORKFLOW_FILE).is_file():
        raise LocalError(f"no rendered workflow for model {model!r} at {source}; check the name, or run "
                         "`ferry render --env local`")
    with _exclusive(settings, model):
        folder = _prepare(settings, source, model, trigger, reason)
        if on_started:
            on_started(folder.name)
        result = run_workflow(folder, settings, on_update=on_update, lock_timeout_s=0)
    status = result.get("status", {})
    return RetrainResult(model, folder.name, str(status.get("phase", "")), str(status.get("message", "")))


@contextlib.contextmanager
def _exclusive(settings: Settings, model: str) -> Iterator[None]:
    try:
        with locks.exclusive(locks.lock_path(settings, f"retrain-{model}"), timeout_s=0,
                             what=f"a retraining run of {model}"):
            _require_free(settings, model)
            yield
    except RetrainingBusy:
        raise
    except LocalError as exc:
        if "is held by" not in str(exc):
            raise
        raise RetrainingBusy(f"{exc}; not starting another") from None


def _require_free(settings: Settings, model: str) -> None:
    """The model's pipeline mutex is free (no `ferry up` run of it); taken and released at once."""
    mutex = names.mutex_name(model)
    try:
        with locks.exclusive(locks.lock_path(settings, mutex), timeout_s=0, what=f"mutex {mutex}"):
            pass
    except LocalError as exc:
        raise RetrainingBusy(f"a pipeline run of {model} is active ({exc}); not starting another") from None


def _prepare(settings: Settings, source: Path, model: str, trigger: str, reason: str) -> Path:
    """A run folder under .ferry/retrain: the rendered Workflow renamed, and its WorkflowTemplate."""
    workflow = yaml.safe_load((source / WORKFLOW_FILE).read_text())
    name = _fresh_name(settings, names.retrain_workflow_prefix(model, trigger))
    folder = retrain_dir(settings, name)
    folder.mkdir(parents=True)
    (folder / WORKFLOW_FILE).write_text(yaml.safe_dump(retrain_workflow(workflow, name, trigger, reason),
                                                       sort_keys=False))
    shutil.copyfile(source / TEMPLATE_FILE, folder / TEMPLATE_FILE)
    return folder


def _fresh_name(settings: Settings, prefix: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name, suffix = f"{prefix}{stamp}", 1
    while retrain_dir(settings, name).exists() or (settings.runs_dir / name).exists():
        suffix += 1
        name = f"{prefix}{stamp}-{suffix}"
    return name


def retrain_workflow(workflow: dict[str, Any], name: str, trigger: str, reason: str) -> dict[str, Any]:
    """The spec's rendered Workflow as a retraining run: new name, trigger argument and label, reason."""
    result = copy.deepcopy(workflow)
    meta = result.setdefault("metadata", {})
    meta["name"] = name
    meta.setdefault("labels", {})[names.LABEL_TRIGGER] = trigger
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("argocd.")}
    meta["annotations"] = {**annotations, names.ANNOTATION_REASON: reason}
    params = [p for p in result["spec"].get("arguments", {}).get("parameters", [])
              if p.get("name") != names.PARAM_TRIGGER]
    result["spec"]["arguments"] = {"parameters": [*params, {"name": names.PARAM_TRIGGER, "value": trigger}]}
    return result
