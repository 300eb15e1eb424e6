"""The plan: per model what a merge does (new, removed, retrain, redeploy, policy only, unchanged).

Pure: both sides arrive as validated specs; rendering both sides names the objects that change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ferry.plan.preview import Preview
from ferry.render.bundle import render_objects
from ferry.render.profiles import EnvName
from ferry.spec.checks import WorkloadFacts
from ferry.spec.hashing import spec_hash
from ferry.spec.models import ModelSpec, training_view

Action = Literal["new", "removed", "retrain", "redeploy", "policy", "unchanged"]
ObjectChange = Literal["added", "changed", "deleted", "kept"]

ACTION_MEANING: dict[Action, str] = {
    "new": "new model: first training run, then a first deployment",
    "removed": "model removed: its objects are pruned",
    "retrain": "training changed: a new pipeline run trains, evaluates and rolls out a new version",
    "redeploy": "serving changed: the RayService is updated in place, nothing is retrained",
    "policy": "rollout, evaluation or monitoring policy changed: no retraining, no redeploy",
    "unchanged": "nothing to do",
}
SERVING_SECTIONS = ("serving",)
POLICY_SECTIONS = ("rollout", "monitoring", "evaluation", "schedule")


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any


@dataclass
class ModelChange:
    name: str
    action: Action
    old_hash: str | None = None
    new_hash: str | None = None
    changes: list[FieldChange] = field(default_factory=list)
    objects: dict[str, ObjectChange] = field(default_factory=dict)

    @property
    def meaning(self) -> str:
        return ACTION_MEANING[self.action]


@dataclass
class Plan:
    env: EnvName
    models: list[ModelChange]
    shared_objects: dict[str, ObjectChange] = field(default_factory=dict)
    previews: list[Preview] = field(default_factory=list)  # `ferry plan --preview` only (ferry.plan.preview)

    @property
    def has_changes(self) -> bool:
        return any(c.action != "unchanged" for c in self.models) or bool(self.shared_objects)

    @property
    def preview_failed(self) -> bool:
        return any(not preview.passed for preview in self.previews)


def make_plan(base: Mapping[str, ModelSpec], head: Mapping[str, ModelSpec], env: EnvName = "prod",
              workloads: Mapping[str, WorkloadFacts] | None = None) -> Plan:
    """`workloads`: the installed workloads' facts, so both sides render as `ferry generate` commits them."""
    objects = _object_changes(base, head, env, workloads)
    models = [_model_change(name, base.get(name), head.get(name)) for name in sorted({*base, *head})]
    for change in models:
        change.objects = {key: val for key, val in objects.items() if key.startswith(f"{change.name}/")}
    shared = {key: val for key, val in objects.items() if key.split("/", 1)[0] not in {*base, *head}}
    return Plan(env=env, models=models, shared_objects=shared)


def _model_change(name: str, old: ModelSpec | None, new: ModelSpec | None) -> ModelChange:
    if old is None:
        assert new is not None
        return ModelChange(name, "new", new_hash=spec_hash(new))
    if new is None:
        return ModelChange(name, "removed", old_hash=spec_hash(old))
    old_hash, new_hash = spec_hash(old), spec_hash(new)
    changes = field_changes(old.model_dump(mode="json"), new.model_dump(mode="json"))
    return ModelChange(name, _classify(old, new, changes, old_hash != new_hash), old_hash, new_hash, changes)


def _classify(old: ModelSpec, new: ModelSpec, changes: list[FieldChange], retrain: bool) -> Action:
    if retrain or training_view(old) != training_view(new):
        return "retrain"
    sections = {c.path.split(".")[1] if c.path.startswith("spec.") else c.path.split(".")[0] for c in changes}
    if sections & set(SERVING_SECTIONS):
        return "redeploy"
    return "policy" if changes else "unchanged"


def field_changes(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Leaf-level differences between two JSON-like values, with dotted paths."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[FieldChange] = []
        for key in sorted({*old, *new}, key=str):
            sub = f"{path}.{key}" if path else str(key)
            out += field_changes(old.get(key), new.get(key), sub)
        return out
    return [] if old == new else [FieldChange(path, old, new)]


def _object_changes(base: Mapping[str, ModelSpec], head: Mapping[str, ModelSpec], env: EnvName,
                    workloads: Mapping[str, WorkloadFacts] | None) -> dict[str, ObjectChange]:
    before = _index(render_objects(list(base.values()), env, workloads=workloads))
    after = _index(render_objects(list(head.values()), env, workloads=workloads))
    result: dict[str, ObjectChange] = {}
    for key in sorted({*before, *after}):
        if key not in before:
            result[key] = "added"
        elif key not in after:
            # Argo CD never prunes Workflows (Prune=false): a finished run stays as history.
            result[key] = "kept" if before[key]["kind"] == "Workflow" else "deleted"
        elif before[key] != after[key]:
            result[key] = "changed"
    return result


def _index(objects: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Key each object as `<folder>/<Kind>/<name>` so a plan names what a person sees in Argo CD."""
    out = {}
    for path, docs in objects.items():
        folder = path.split("/", 1)[0]
        for doc in docs:
            meta = doc.get("metadata", {})
            name = meta.get("name") or meta.get("generateName", "")
            out[f"{folder}/{doc['kind']}/{name}"] = doc
    return out
