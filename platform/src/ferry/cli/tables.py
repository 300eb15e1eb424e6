"""The tables more than one verb prints: services, the outcome of reconciling models, runs, and a run's
progress while it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.live import Live

from ferry.cli.output import Col, FitTable
from ferry.local.engine.progress import render_progress


def services_table(services: list[Any]) -> FitTable:
    table = FitTable("service", "state", "url", Col("message", wrap=True))
    for service in services:
        table.add_row(service.name, service.state, service.url or "", service.message or "")
    return table


def outcomes_table(result: Any) -> FitTable:
    """What reconciling did per model: `ferry up`, `ferry up --watch` and a local `ferry submit`."""
    table = FitTable("model", "spec hash", "action", "phase", "time", Col("result", wrap=True))
    for m in result.models:
        version = m.outputs.get("register.model-version", "")
        detail = f"version {version}, {m.outputs.get('rollout.decision', '')}" if version else summarize(m.message)
        table.add_row(m.model, m.spec_hash, m.action, m.phase, f"{m.seconds:.0f}s" if m.seconds else "", detail)
    return table


def runs_table(found: list[dict[str, Any]]) -> FitTable:
    """One row per run: the same columns for local runs and a cluster's."""
    table = FitTable("run", "model", "phase", "progress", "started", "finished", Col("message", wrap=True))
    for run in found:
        cells = [str(run.get(k) or "") for k in ("name", "model", "phase", "progress", "startedAt", "finishedAt")]
        table.add_row(*cells, summarize(str(run.get("message") or "")))
    return table


def summarize(message: str, limit: int = 240) -> str:
    """One readable line from a long failure message: its first line and the step's own error line."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    if not lines:
        return ""
    errors = [line for line in lines[1:] if line.lower().startswith(("error", "stepfailed"))]
    text = lines[0] + (f" … {errors[-1]}" if errors else "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextmanager
def following_runs(console: Console) -> Iterator[Callable[[dict[str, Any]], None]]:
    """The runner's on_update hook: a live table of every run in a terminal (`ferry up` runs the models' Workflows
    at once, each from its own thread). Elsewhere (a pipe, a file, a CI log) a live display only writes its last
    frame, with no line end, so the next output would follow on the same line; there each run's last state is
    printed once, when the runs are done."""
    last: dict[str, dict[str, Any]] = {}

    def keep(workflow: dict[str, Any]) -> None:
        last[str(workflow.get("metadata", {}).get("name", ""))] = workflow

    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            def show(workflow: dict[str, Any]) -> None:
                keep(workflow)
                live.update(Group(*(render_progress(run) for run in list(last.values()))))

            yield show
        return
    try:
        yield keep
    finally:
        for workflow in last.values():
            console.print(render_progress(workflow))


def replay_table(report: Any) -> FitTable:
    """What `ferry replay` sent and what the endpoint made of it."""
    import numpy as np

    def when(ns: int | None) -> str:
        return "" if ns is None else str(np.datetime64(ns, "ns").astype("datetime64[s]"))

    rate = report.sent / report.elapsed_s if report.elapsed_s else 0.0
    failed = ", ".join(f"{status}: {rows}" for status, rows in sorted(report.failed.items())) or "none"
    table = FitTable("what", Col("result", wrap=True))
    if report.clicks:  # a ranking workload's feedback replay (ferry.serving.replay_feedback)
        table.add_row("requests", f"{report.scored} answered of {report.sent} sent ({rate:.0f}/s)")
        table.add_row("clicks", f"{report.labels_sent} sent, {report.labels['stored']} stored")
        table.add_row("hit rate", ", ".join(f"{variant} {report.hits[variant] / report.clicks[variant]:.3f} "
                                            f"({report.hits[variant]}/{report.clicks[variant]})"
                                            for variant in sorted(report.clicks)))
    else:
        labels = ", ".join(f"{kind} {report.labels[kind]}" for kind in ("stored", "repeated", "corrected",
                                                                        "unmatched"))
        table.add_row("transactions", f"{report.scored} scored of {report.sent} sent ({rate:.0f}/s)")
        table.add_row("event time", f"{when(report.first_event_ns)} .. {when(report.last_event_ns)}")
        table.add_row("labels", f"{report.labels_sent} sent: {labels}")
    table.add_row("failed rows", failed)
    table.add_row("stopped by", f"{report.stopped_by} after {report.elapsed_s:.1f}s")
    return table
