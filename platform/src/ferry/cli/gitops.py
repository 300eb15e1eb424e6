"""`ferry validate`, `ferry render`, `ferry plan`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ferry import workspace
from ferry.adapters.workloads import workload_facts
from ferry.cli.output import console, err_console, indented, print_spec_errors, raw
from ferry.plan.report import as_json, as_markdown, as_text
from ferry.render.profiles import EnvName
from ferry.settings import load_settings

FORMATTERS = {"text": as_text, "markdown": as_markdown, "json": as_json}


def validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="Spec files or folders (default: gitops/models).")] = None,
) -> None:
    """Check spec files: schema, then semantic checks; report every error in every file."""
    home = load_settings().home
    result = workspace.validate(paths or [home / workspace.MODELS_DIR], workload_facts())
    if print_spec_errors(result.errors):
        err_console.print(f"[red]{len(result.errors)} error(s)[/red] in {result.files} file(s)")
        raise typer.Exit(1)
    console.print(f"[green]ok[/green] {len(result.specs)} model(s) valid")


def render(
    env: Annotated[EnvName, typer.Option(help="Which rendered folder to write.")] = "local",
    check: Annotated[bool, typer.Option("--check", help="Exit 1 with a diff when the output is stale.")] = False,
) -> None:
    """Render gitops/models into gitops/rendered/<env>/ (pure and deterministic)."""
    result = workspace.render(load_settings().home, env, check=check, workloads=workload_facts())
    if check:
        for diff in result.drift.values():
            raw(diff)
        if result.stale:
            err_console.print(f"[red]stale[/red]: {len(result.drift)} file(s) differ; run `ferry render --env {env}`")
            raise typer.Exit(1)
        console.print(f"[green]up to date[/green] gitops/rendered/{env}")
        return
    for path in result.written:
        console.print(f"wrote gitops/rendered/{env}/{path}")
    for path in result.removed:
        console.print(f"removed gitops/rendered/{env}/{path}")
    if not (result.written or result.removed):
        console.print(f"gitops/rendered/{env} is up to date")


def plan(
    base: Annotated[str, typer.Option(help="Git ref to compare the working tree with.")] = "origin/main",
    env: Annotated[EnvName, typer.Option(help="Environment whose rendered objects are compared.")] = "prod",
    output_format: Annotated[str, typer.Option("--format", help="text, markdown or json.")] = "text",
) -> None:
    """Say per model what merging the working tree would do: new, removed, retrain, redeploy, policy."""
    if output_format not in FORMATTERS:
        err_console.print(f"[red]error[/red] --format must be one of {', '.join(FORMATTERS)}")
        raise typer.Exit(2)
    text = FORMATTERS[output_format](workspace.plan(load_settings().home, base, env))
    if output_format != "text":
        raw(text, end="")  # markdown and JSON are for machines and PR comments: exactly as formatted
        return
    for line in text.splitlines():  # wrapped to the terminal, each line keeping its indentation
        body = line.lstrip(" ")
        console.print(indented(body, len(line) - len(body)))


def schema(
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when the committed schema is stale.")] = False,
) -> None:
    """Write the spec's JSON Schema to docs/reference/model.schema.json (for editors and reviewers)."""
    from ferry.spec.jsonschema import SCHEMA_PATH, model_schema_text

    path = load_settings().home / SCHEMA_PATH
    wanted = model_schema_text(workload_facts())
    current = path.read_text() if path.exists() else ""
    if check:
        if current != wanted:
            err_console.print(f"[red]stale[/red]: {SCHEMA_PATH}; run `ferry schema`")
            raise typer.Exit(1)
        console.print(f"[green]up to date[/green] {SCHEMA_PATH}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(wanted)
    console.print(f"wrote {SCHEMA_PATH}")
