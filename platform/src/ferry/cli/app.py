"""The typer application. A failure prints one clear message and exits non-zero, never a traceback.

A FerryError is a failure ferry expected (bad spec, service down, step failed): its user_message is printed
and the command exits with its exit_code. Anything else is a bug in ferry and says so in one line;
FERRY_DEBUG=1 lets it through with its traceback. Ctrl-C exits 130. Usage errors keep typer's own output.
"""

from __future__ import annotations

import os
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ferry.cli import alerts, cluster, generated, gitops, lineage, local, step
from ferry.cli.image import image_app
from ferry.cli.output import err_console, print_spec_errors
from ferry.cli.rollout import rollout_app
from ferry.contract.errors import FerryError
from ferry.spec.errors import SpecInvalid

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped with Ctrl-C
DEBUG_VARIABLE = "FERRY_DEBUG"


class FerryGroup(TyperGroup):
    """The root command: every verb runs inside its error handling, so CliRunner tests see what a person sees."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise  # usage errors (click's ClickException) and deliberate exits: printed and exited as typer does
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if os.environ.get(DEBUG_VARIABLE):
                raise
            raise typer.Exit(report(exc)) from None


def report(exc: Exception) -> int:
    """Print `exc` for a person (one line, or one per spec error) and return the exit code."""
    if isinstance(exc, SpecInvalid):
        print_spec_errors(exc.errors)
        err_console.print(f"[red]{len(exc.errors)} error(s)[/red]: fix the spec, then run again")
    elif isinstance(exc, FerryError):
        err_console.print(f"[red]error[/red] {escape(exc.user_message)}")
    else:
        err_console.print(f"[red]ferry hit an unexpected error[/red]: {escape(_one_line(exc))}; "
                          f"rerun with {DEBUG_VARIABLE}=1 for the traceback")
        return 1
    return exc.exit_code


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


app = typer.Typer(
    name="ferry",
    cls=FerryGroup,
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
app.add_typer(image_app, name="image")
for verb in (local.up, local.down, local.status, local.runs, local.logs, local.replay):
    app.command()(verb)
app.command()(cluster.submit)
app.command()(alerts.alerts)
app.command()(lineage.lineage)


def main() -> None:
    """The `ferry` command. It ends without the interpreter's module teardown (zygote.end_as_main): a step's
    Ray job is over only when its driver exits, and a process that imported torch, MLflow and Ray spent about
    a second tearing them down after its work, on every Ray step and at the end of every `ferry up`."""
    from ferry.local.engine.zygote import end_as_main

    os._exit(end_as_main(app))


if __name__ == "__main__":
    main()
