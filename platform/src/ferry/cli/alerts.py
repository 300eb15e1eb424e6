"""`ferry alerts`: the alerts the local webhook receiver recorded (.ferry/alerts/alerts.db)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from ferry.cli.output import console
from ferry.settings import load_settings

STATUS_STYLE = {"firing": "[red]firing[/red]", "resolved": "[green]resolved[/green]"}


def alerts(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model's alerts.")] = None,
    firing: Annotated[bool, typer.Option("--firing", help="Only alerts that are firing now.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one list) instead of a table.")] = False,
) -> None:
    """Show the alerts ferry's local receiver got from Alertmanager, newest first, and any retraining they started."""
    from ferry.local.alerts.store import AlertStore, db_path

    settings = load_settings()
    found = AlertStore.open(settings).alerts(model=model, firing=firing, limit=limit) \
        if db_path(settings).exists() else []
    if as_json:
        console.print_json(json.dumps([a.as_json() for a in found]))
        return
    if not found:
        console.print("no alerts recorded" + (f" for {model}" if model else "") + (" firing" if firing else "")
                      + f" (receiver database: {db_path(settings)})")
        return
    for alert in found:
        console.print("\n".join(_lines(alert)))


def _lines(alert: Any) -> list[str]:
    """One block per alert: readable at any terminal width (a wide table would cut the runbook URL)."""
    when = f"since {alert.starts_at}" + (f", resolved {alert.ends_at}" if alert.ends_at else "")
    head = (f"{STATUS_STYLE.get(alert.status, escape(alert.status))}  [bold]{escape(alert.alertname)}[/bold]  "
            f"severity={escape(alert.severity)} team={escape(alert.team)} model={escape(alert.model)}  {when}")
    lines = [head, f"    {escape(alert.summary)}", f"    runbook: {escape(alert.runbook_url)}"]
    for trigger in alert.retraining[-1:]:
        run = f" {trigger['workflow']}" if trigger["workflow"] else ""
        phase = f" ({trigger['phase']})" if trigger["phase"] else ""
        lines.append(escape(f"    retraining: {trigger['result']}{run}{phase}: {trigger['message']}"))
    return lines
