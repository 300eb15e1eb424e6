"""The typer application. Known failures print a clear message and exit non-zero, never a traceback."""

from __future__ import annotations

import os
import sys

import typer

from ferry.cli import alerts, cluster, generated, gitops, local, step
from ferry.cli.output import err_console, print_spec_errors
from ferry.cli.rollout import rollout_app

app = typer.Typer(
    name="ferry",
    help="GitOps-driven ML platform: validate, render and plan model specs; run them locally or on a cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(gitops.validate)
app.command()(gitops.render)
app.command()(gitops.plan)
app.command()(gitops.schema)
app.command()(generated.generate)
app.command()(step.step)
app.add_typer(rollout_app, name="rollout")
for verb in (local.up, local.down, local.status, local.runs, local.logs):
    app.command()(verb)
app.command()(cluster.submit)
app.command()(alerts.alerts)


def main() -> None:
    try:
        app()
    except Exception as exc:
        sys.exit(_report(exc))


def _report(exc: Exception) -> int:
    from ferry.spec.errors import SpecInvalid

    if isinstance(exc, SpecInvalid):
        print_spec_errors(exc.errors)
        err_console.print(f"[red]{len(exc.errors)} error(s)[/red]: fix the spec, then run again")
        return 1
    if os.environ.get("FERRY_DEBUG"):
        raise exc
    message = getattr(exc, "user_message", None) or f"{type(exc).__name__}: {exc}"
    err_console.print(f"[red]error[/red] {message}")
    if not getattr(exc, "user_message", None):
        err_console.print("(set FERRY_DEBUG=1 to see the traceback)")
    return 1


if __name__ == "__main__":
    main()
