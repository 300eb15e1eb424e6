"""A rich table of a run's DAG, for `ferry run` (live, through the runner's on_update hook) and
`ferry runs show`. Pure: it only reads the Workflow object the runner persists."""

from __future__ import annotations

import calendar
import time
from typing import Any

from rich.table import Table
from rich.text import Text

STYLE = {
    "Succeeded": ("✔", "green"), "Failed": ("✘", "red"), "Error": ("!", "red"), "Running": ("●", "yellow"),
    "Pending": ("·", "dim"), "Skipped": ("↷", "dim"), "Omitted": ("-", "dim"),
}
MAX_CELL = 400  # a failed step's message says what to do: whole, but bounded (it may end in a log tail)
NOT_RUN = ("Pending", "Skipped", "Omitted")


def _seconds(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def _duration(node: dict[str, Any]) -> str:
    start = _seconds(node.get("startedAt"))
    if start is None:
        return ""
    end = _seconds(node.get("finishedAt")) or time.time()
    total = int(max(0.0, end - start))
    return f"{total // 60}m{total % 60:02d}s" if total >= 60 else f"{total}s"


def _task_nodes(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Task nodes in DAG order (from the stored spec), else in the order they were recorded."""
    nodes = status.get("nodes", {})
    tasks = [n for n in nodes.values() if n.get("boundaryID") and "(" not in n.get("displayName", "")]
    spec = status.get("storedWorkflowTemplateSpec") or {}
    order = [t["name"] for tpl in spec.get("templates", [])
             if tpl.get("name") == spec.get("entrypoint") for t in tpl.get("dag", {}).get("tasks", [])]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(tasks, key=lambda n: rank.get(n["displayName"], len(rank)))


def _detail(node: dict[str, Any]) -> str:
    if node.get("message"):
        text = str(node["message"])
    else:
        params = node.get("outputs", {}).get("parameters", [])
        text = " ".join(f"{p['name']}={p.get('value', '')}" for p in params if p.get("value"))
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def render_progress(workflow_or_status: dict[str, Any]) -> Table:
    """One row per DAG task: phase, attempts, duration, and its message or outputs."""
    status = workflow_or_status.get("status", workflow_or_status)
    name = workflow_or_status.get("metadata", {}).get("name") or next(iter(status.get("nodes", {})), "workflow")
    phase = status.get("phase", "Pending")
    symbol, style = STYLE.get(phase, ("?", ""))
    title = Text.assemble((f"{symbol} ", style), (name, "bold"), f"  {phase}  {status.get('progress', '')}")
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("step", "phase", "attempts", "duration", "details"):
        # details wrap, and fold a long word (a run id) rather than cut it; the other columns are short
        table.add_column(column, no_wrap=column != "details", overflow="fold")
    nodes = status.get("nodes", {})
    for node in _task_nodes(status):
        symbol, style = STYLE.get(node.get("phase", ""), ("?", ""))
        attempts = [nodes[c] for c in node.get("children", []) if c in nodes and nodes[c].get("type") == "Pod"
                    and nodes[c].get("displayName", "").startswith(node["displayName"] + "(")]
        table.add_row(node["displayName"], Text(f"{symbol} {node.get('phase', '')}", style=style),
                      str(len(attempts)) if attempts else ("1" if node.get("phase") not in NOT_RUN else ""),
                      _duration(node), _detail(node))
    if status.get("message"):
        table.caption = str(status["message"])
    return table
