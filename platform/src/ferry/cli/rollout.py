"""`ferry rollout status|promote|abort MODEL`: what people do with a canary."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ferry.cli.output import Col, FitTable, console, err_console
from ferry.settings import load_settings

if TYPE_CHECKING:
    from ferry.adapters.registry_port import RegistryPort

rollout_app = typer.Typer(help="Inspect or override a canary rollout.", no_args_is_help=True)


def _registry() -> RegistryPort:
    from ferry.adapters.registry import Registry

    return Registry(load_settings().mlflow_uri)


@rollout_app.command()
def status(model: Annotated[str, typer.Argument(help="Model name.")],
           version: Annotated[str | None, typer.Option(help="Version to show (default: the challenger, else the "
                                                            "newest version that had a rollout).")] = None) -> None:
    """Champion, challenger and weight; one version's rollout state, reason and every recorded check."""
    from ferry.rollout.actions import status as rollout_status

    found = rollout_status(_registry(), model, version)
    view = found.view
    console.print(f"{model}: champion v{view.champion or '-'}, challenger v{view.challenger or '-'} at {view.weight}%",
                  markup=False)
    if found.version is None:
        return
    console.print(f"v{found.version}: state {found.state}, weight {found.weight}, reason {found.reason}", markup=False)
    table = FitTable("check", "at (UTC)", "verdict", "action", "weight", "requests champ/chal", "errors champ/chal",
                     "err Δ", "p99 ms champ/chal", "PSI (noise)", "labels: Δ [bounds]",
                     Col("reason", wrap=True))
    for number, record in found.checks:
        table.add_row(number, *_check_cells(record))
    console.print(table)


def _check_cells(record: dict[str, Any]) -> list[str]:
    def pair(key: str, digits: int = 0) -> str:
        values = record.get(key)
        if not isinstance(values, list) or len(values) != 2:
            return "-"
        return "/".join("-" if v is None else f"{v:.{digits}f}" for v in values)

    at = record.get("at")
    when = time.strftime("%H:%M:%S", time.gmtime(at)) if isinstance(at, int | float) else "-"
    delta = "-"
    if "error_rate_delta" in record:
        delta = (f"{record['error_rate_delta']:+.4f} [{record.get('error_rate_lower', 0):+.4f}, "
                 f"{record.get('error_rate_upper', 0):+.4f}]")
    psi = "-" if record.get("score_psi") is None else f"{record['score_psi']:.3f} ({record.get('psi_noise')})"
    return [when, str(record.get("verdict", "-")), str(record.get("action", "-")), str(record.get("weight", "-")),
            pair("requests"), pair("errors"), delta, pair("p99_ms", 1), psi, _outcome_cell(record.get("outcomes")),
            str(record.get("reason", ""))]


def _outcome_cell(outcomes: object) -> str:
    """`1200 (80 pos) average_precision -0.012 [-0.031, +0.008]`: paired labelled transactions, and per metric
    challenger - champion with its bounds."""
    if not isinstance(outcomes, dict):
        return "-"
    cells = [f"{outcomes.get('labelled', 0)} ({outcomes.get('positives', 0)} pos)"]
    for name, values in outcomes.items():
        if isinstance(values, list) and len(values) == 3:
            cells.append(f"{name} {values[0]:+.3f} [{values[1]:+.3f}, {values[2]:+.3f}]")
    return " ".join(cells)


def _by_hand(model: str, promote: bool) -> None:
    from ferry.rollout.actions import NoChallenger, by_hand
    from ferry.rollout.policy import Action

    try:
        view = by_hand(_registry(), model, Action.PROMOTE if promote else Action.ROLLBACK)
    except NoChallenger as exc:
        err_console.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from None
    if promote:
        console.print(f"{model}: v{view.challenger} is now champion")
    else:
        console.print(f"{model}: v{view.challenger} rolled back; v{view.champion} serves all traffic")


@rollout_app.command()
def promote(model: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Make the challenger the champion now (a person's decision, recorded as such)."""
    _by_hand(model, promote=True)


@rollout_app.command()
def abort(model: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Roll the challenger back now: weight 0, alias removed, the champion keeps all traffic."""
    _by_hand(model, promote=False)
