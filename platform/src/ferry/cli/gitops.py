"""`ferry validate`, `ferry render`, `ferry plan`, `ferry schema` (the last two through ferry.cli.generated)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ferry import workspace
from ferry.adapters.workloads import workload_facts
from ferry.cli import generated
from ferry.cli.output import console, err_console, indented, print_spec_errors, raw
from ferry.plan import make_plan
from ferry.plan.report import as_json, as_markdown, as_text
from ferry.render.profiles import EnvName, rendered_dir
from ferry.settings import load_settings
from ferry.spec.jsonschema import SCHEMA_PATH

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
    ctx: typer.Context,
    env: Annotated[EnvName, typer.Option(help="Which rendered folder to write.")] = "local",
    check: Annotated[bool, typer.Option("--check", help="Exit 1 with a diff when the output is stale.")] = False,
) -> None:
    """Render gitops/models into gitops/rendered/<env>/ (pure and deterministic)."""
    generated.run(ctx, [rendered_dir(env)], check, fix=f"ferry render --env {env}", diff=True)


def plan(
    base: Annotated[str, typer.Option(help="Git ref to compare the working tree with.")] = "origin/main",
    env: Annotated[EnvName, typer.Option(help="Environment whose rendered objects are compared.")] = "prod",
    output_format: Annotated[str, typer.Option("--format", help="text, markdown or json.")] = "text",
    preview: Annotated[bool, typer.Option(help=(
        "Train the base and head spec of every model whose training changes on a small sample and compare the "
        "metrics its spec judges; exit 1 when one drops by more than --tolerance."))] = False,
    tolerance: Annotated[float, typer.Option(min=0, help="Largest drop of a judged metric the preview accepts "
                                                         "(absolute, e.g. 0.02 of NDCG@10).")] = 0.02,
    budget: Annotated[float, typer.Option(min=10, help="Seconds the whole preview may take.")] = 900.0,
) -> None:
    """Say per model what merging the working tree would do: new, removed, retrain, redeploy, policy."""
    if output_format not in FORMATTERS:
        err_console.print(f"[red]error[/red] --format must be one of {', '.join(FORMATTERS)}")
        raise typer.Exit(2)
    settings = load_settings()
    if preview:
        from ferry.steps.preview import preview_plan

        sides = workspace.plan_sides(settings.home, base)
        with err_console.status("metric preview") as status:
            found = preview_plan(make_plan(*sides, env, workload_facts()), *sides, settings.data_dir, tolerance, budget,
                                 on_model=lambda name: status.update(f"metric preview: training {name} (base, head)"))
    else:
        found = workspace.plan(settings.home, base, env, workload_facts())
    _print_plan(FORMATTERS[output_format](found), output_format)
    if found.preview_failed:
        raise typer.Exit(1)


def _print_plan(text: str, output_format: str) -> None:
    if output_format != "text":
        raw(text, end="")  # markdown and JSON are for machines and PR comments: exactly as formatted
        return
    for line in text.splitlines():  # wrapped to the terminal, each line keeping its indentation
        body = line.lstrip(" ")
        console.print(indented(body, len(line) - len(body)))


def schema(
    ctx: typer.Context,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when the committed schema is stale.")] = False,
) -> None:
    """Write the spec's JSON Schema to docs/reference/model.schema.json (for editors and reviewers)."""
    generated.run(ctx, [SCHEMA_PATH], check, fix="ferry schema")
