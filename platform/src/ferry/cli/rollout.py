"""`ferry rollout status|promote|abort MODEL`: what people do with a canary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ferry.cli.output import console, err_console
from ferry.settings import load_settings

if TYPE_CHECKING:
    from ferry.adapters.registry import Registry

rollout_app = typer.Typer(help="Inspect or override a canary rollout.", no_args_is_help=True)


def _registry() -> Registry:
    from ferry.adapters.registry import Registry

    return Registry(load_settings().mlflow_uri)


@rollout_app.command()
def status(model: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Champion, challenger, the challenger's weight and every recorded check."""
    from ferry.render import names

    registry = _registry()
    view = registry.rollout_view(model)
    console.print(f"{model}: champion v{view.champion or '-'}, challenger v{view.challenger or '-'} "
                  f"at {view.weight}%")
    version = view.challenger or view.champion
    if version is None:
        return
    tags = registry.client.get_model_version(names.registered_model_name(model), version).tags
    table = Table("check", "record")
    for key in sorted(k for k in tags if k.startswith("ferry.rollout.check.")):
        table.add_row(key.rsplit(".", 1)[-1], tags[key])
    console.print(f"v{version}: state {tags.get(names.TAG_ROLLOUT_STATE, '-')}, "
                  f"reason {tags.get(names.TAG_ROLLOUT_REASON, '-')}")
    console.print(table)


@rollout_app.command()
def promote(model: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Make the challenger the champion now (a person's decision, recorded as such)."""
    from ferry.render import names

    registry = _registry()
    view = registry.rollout_view(model)
    if view.challenger is None:
        err_console.print(f"[red]error[/red] {model} has no challenger to promote")
        raise typer.Exit(1)
    registry.set_alias(model, names.ALIAS_CHAMPION, view.challenger)
    registry.delete_alias(model, names.ALIAS_CHALLENGER)
    registry.tag_version(model, view.challenger, {names.TAG_ROLLOUT_STATE: "promoted", names.TAG_ROLLOUT_WEIGHT: 100,
                                                  names.TAG_ROLLOUT_REASON: "promoted by hand"})
    console.print(f"{model}: v{view.challenger} is now champion")


@rollout_app.command()
def abort(model: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Roll the challenger back now: weight 0, alias removed, the champion keeps all traffic."""
    from ferry.render import names

    registry = _registry()
    view = registry.rollout_view(model)
    if view.challenger is None:
        err_console.print(f"[red]error[/red] {model} has no challenger to abort")
        raise typer.Exit(1)
    registry.tag_version(model, view.challenger, {names.TAG_ROLLOUT_WEIGHT: 0})
    registry.delete_alias(model, names.ALIAS_CHALLENGER)
    registry.tag_version(model, view.challenger, {names.TAG_ROLLOUT_STATE: "rolled-back",
                                                  names.TAG_ROLLOUT_REASON: "aborted by hand"})
    console.print(f"{model}: v{view.challenger} rolled back; v{view.champion} serves all traffic")
