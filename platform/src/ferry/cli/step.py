"""`ferry step <name>`: what the rendered Workflow runs in each step."""

from __future__ import annotations

from typing import Annotated

import typer

from ferry.cli.output import err_console, raw
from ferry.contract import names
from ferry.settings import load_settings

STEP_NAMES = names.STEPS


def step(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(STEP_NAMES)}.")],
    spec: Annotated[str, typer.Option(help="Rendered spec: a path (relative to FERRY_HOME) or its JSON.")],
    run: Annotated[str, typer.Option(help="The workflow name: steps find each other's results by it.")],
    expect_hash: Annotated[str | None, typer.Option(help="Fail if the spec's hash differs.")] = None,
) -> None:
    """Run one pipeline step (idempotent: a finished step re-emits its outputs and does nothing)."""
    if name not in STEP_NAMES:
        err_console.print(f"[red]error[/red] unknown step {name!r}; steps: {', '.join(STEP_NAMES)}")
        raise typer.Exit(2)
    from ferry.contract.errors import TransientStepError
    from ferry.steps.runner import run_step

    try:
        ctx = run_step(name, spec, run, expect_hash, load_settings())
    except TransientStepError as exc:
        err_console.print(f"[yellow]transient[/yellow] {exc.user_message}")
        raise typer.Exit(names.EXIT_TRANSIENT) from None
    for key, value in ctx.outputs.items():
        raw(f"{name}.{key} = {value}")
