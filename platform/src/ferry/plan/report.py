"""Plans as text, markdown (a pull-request comment) or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from ferry.plan.diff import ModelChange, Plan

ICONS = {"new": "🆕", "removed": "🗑️", "retrain": "🔁", "redeploy": "🚀", "policy": "📐", "unchanged": "✅"}
COMMENT_MARKER = "<!-- ferry-plan -->"
MAX_VALUE = 60


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _hashes(change: ModelChange) -> str:
    if change.old_hash and change.new_hash and change.old_hash != change.new_hash:
        return f"{change.old_hash} → {change.new_hash}"
    return change.new_hash or change.old_hash or ""


def as_text(plan: Plan) -> str:
    lines = []
    for change in plan.models:
        lines.append(f"{change.name}: {change.action} ({change.meaning}) spec-hash {_hashes(change)}")
        lines += [f"    {c.path}: {_short(c.old)} → {_short(c.new)}" for c in change.changes]
        lines += [f"    {verb} {obj}" for obj, verb in change.objects.items()]
    lines += [f"shared: {verb} {obj}" for obj, verb in plan.shared_objects.items()]
    return "\n".join(lines) if lines else "no models"


def as_markdown(plan: Plan) -> str:
    rows = [f"| {ICONS[c.action]} `{c.name}` | **{c.action}** | `{_hashes(c)}` | {c.meaning} |" for c in plan.models]
    parts = [COMMENT_MARKER, f"### ferry plan ({plan.env})", "",
             "| model | action | spec hash | what happens on merge |", "|---|---|---|---|", *rows]
    for change in plan.models:
        if change.changes or change.objects:
            parts += ["", f"<details><summary><code>{change.name}</code>: {len(change.changes)} field(s), "
                      f"{len(change.objects)} object(s)</summary>", ""]
            parts += [f"- `{c.path}`: `{_short(c.old)}` → `{_short(c.new)}`" for c in change.changes]
            parts += [f"- {verb} `{obj}`" for obj, verb in change.objects.items()]
            parts += ["", "</details>"]
    if plan.shared_objects:
        parts += ["", "Shared objects:"] + [f"- {verb} `{obj}`" for obj, verb in plan.shared_objects.items()]
    return "\n".join(parts) + "\n"


def as_json(plan: Plan) -> str:
    return json.dumps(asdict(plan), indent=2, sort_keys=True, default=str) + "\n"
