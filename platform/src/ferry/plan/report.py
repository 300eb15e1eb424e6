"""Plans as text, markdown (a pull-request comment) or JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from ferry.plan.diff import ModelChange, Plan
from ferry.plan.preview import Preview

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
    for preview in plan.previews:
        lines.append(f"preview {preview.model}: {'ok' if preview.passed else 'FAILED'} ({preview.verdict}); "
                     f"{_setup(preview)}")
        lines += [f"    {metric}: {base} → {head} ({delta})" for metric, base, head, delta in _preview_rows(preview)]
    return "\n".join(lines) if lines else "no models"


def _setup(preview: Preview) -> str:
    sides = [s for s in (preview.base, preview.head) if s is not None]
    rows = "/".join(f"{s.rows:,}" for s in sides)
    seconds = sum(s.seconds for s in sides)
    return (f"{preview.epochs} epochs × {preview.seeds} seeds on the workload's sample ({rows} rows), "
            f"training.params, no tuning; {seconds:.0f} s")


def _preview_rows(preview: Preview) -> list[tuple[str, str, str, str]]:
    """(metric, base, head, Δ) per metric the head reported, the judged ones first."""
    if preview.head is None:
        return []
    ordered = [*preview.judged, *(m for m in preview.head.metrics if m not in preview.judged)]
    rows = []
    for metric in ordered:
        base = preview.base.metrics.get(metric) if preview.base is not None else None
        delta = preview.delta(metric)
        head = preview.head.metrics.get(metric, math.nan)
        rows.append((metric, "–" if base is None else f"{base:.4f}", f"{head:.4f}",
                     "–" if delta is None else f"{delta:+.4f}"))
    return rows


def _preview_markdown(plan: Plan) -> list[str]:
    if not plan.previews:
        return []
    parts = ["", "#### Metric preview", ""]
    for preview in plan.previews:
        icon = "✅" if preview.passed else "❌"
        parts += [f"{icon} `{preview.model}`: {preview.verdict}. {_setup(preview)}.", ""]
        rows = _preview_rows(preview)
        if rows:
            parts += ["| metric | base | head | Δ |", "|---|---|---|---|"]
            parts += [f"| {'**' + m + '**' if m in preview.judged else m} | {b} | {h} | {d} |" for m, b, h, d in rows]
            parts.append("")
    return parts


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
    parts += _preview_markdown(plan)
    return "\n".join(parts) + "\n"


def as_json(plan: Plan) -> str:
    return json.dumps(asdict(plan), indent=2, sort_keys=True, default=str) + "\n"
