"""`ferry alerts`: the alerts the local webhook receiver recorded (.ferry/alerts/alerts.db)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text

from ferry.cli.output import console, indented, raw
from ferry.settings import load_settings

STATUS_STYLE = {"firing": "red", "resolved": "green"}
INDENT = "    "


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
        raw(json.dumps([a.as_json() for a in found], indent=2, ensure_ascii=False))
        return
    if not found:
        console.print("no alerts recorded" + (f" for {model}" if model else "") + (" firing" if firing else "")
                      + f" (receiver database: {db_path(settings)})")
        return
    for index, alert in enumerate(found):
        if index:
            console.print()
        _print(alert)


def _print(alert: Any) -> None:
    """One block per alert, wrapped to the terminal: a wide table would cut the names and the runbook URL."""
    when = f"since {alert.starts_at}" + (f", resolved {alert.ends_at}" if alert.ends_at else "")
    head = Text.assemble((alert.status, STATUS_STYLE.get(alert.status, "")), "  ", (alert.alertname, "bold"))
    labels = f"severity={alert.severity} team={alert.team} model={alert.model}"
    console.print(Group(head, *(indented(line, len(INDENT)) for line in (labels, when, alert.summary))))
    # A URL is one word: wrapped or cut it would not open, so a long one gets a line of its own, whole.
    if len(INDENT) + len("runbook: ") + len(alert.runbook_url) <= console.width:
        raw(f"{INDENT}runbook: {alert.runbook_url}")
    else:
        raw(f"{INDENT}runbook:\n{alert.runbook_url}")
    for trigger in alert.retraining[-1:]:
        run = f" {trigger['workflow']}" if trigger["workflow"] else ""
        phase = f" ({trigger['phase']})" if trigger["phase"] else ""
        console.print(indented(f"retraining: {trigger['result']}{run}{phase}: {trigger['message']}", len(INDENT)))
