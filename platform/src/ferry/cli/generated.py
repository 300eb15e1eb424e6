"""Every file the repository commits but nobody writes by hand, in one registry, and `ferry generate`.

An entry names what it owns (one file, or a folder: a file in it that is generated no more is removed on
write and reported on check), says in one line what it is, and produces the text from pure functions of the
checkout's specs and of the code. `ferry generate` writes every entry (`task golden:update` runs it),
`ferry generate --check` compares them with the checkout and exits 1 on drift (tests/golden runs the same
check, one test per entry); `ferry render` and `ferry schema` are the same code for one entry each.

Adding a generated file is one line in ENTRIES, e.g. for a page made by a pure `metrics_reference() -> str`:

    file("docs/reference/metrics.md", "the metric catalogue", lambda src: metrics_reference()),

`folder(path, description, files)` is the same for a producer of `{path inside the folder: text}`. A producer
takes `Sources` (the checkout's models, installed workloads, the CLI) and must not do I/O of its own.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, TypeAlias

import typer

from ferry import workspace
from ferry.adapters import image_build
from ferry.adapters.workloads import workload_facts
from ferry.cli import docs
from ferry.cli.output import console, err_console
from ferry.contract.errors import FerryError
from ferry.render import monitoring
from ferry.render.bundle import render_files
from ferry.render.metrics_doc import METRICS_DOC_PATH, metrics_markdown
from ferry.render.profiles import rendered_dir
from ferry.settings import load_settings
from ferry.spec.checks import WorkloadFacts
from ferry.spec.jsonschema import SCHEMA_PATH, model_schema_text
from ferry.spec.models import ModelSpec
from ferry.workspace import FileChanges

Command: TypeAlias = Any  # the root command of the typer app (typer vendors its own click)
MONITORING_GENERATED = "monitoring/generated"


@dataclass
class Sources:
    """What generated files are made from, each read at most once: the specs under `home`, the installed
    workloads, and the CLI's root command (docs/reference/cli.md documents it)."""

    home: Path
    cli: Command

    @cached_property
    def workloads(self) -> dict[str, WorkloadFacts]:
        return workload_facts()

    @cached_property
    def models(self) -> list[ModelSpec]:
        return [spec.model for spec in workspace.valid_specs(self.home, self.workloads)]

    @cached_property
    def image_tag(self) -> str:
        """The prod manifests' image tag: a hash of the image's build inputs in `home` (`ferry image tag`)."""
        return image_build.base_tag(self.home)

    @cached_property
    def monitoring(self) -> dict[str, str]:
        return monitoring.generated_files(self.models, self.workloads)

    def monitoring_in(self, folder: str) -> dict[str, str]:
        return {path.removeprefix(f"{folder}/"): text for path, text in self.monitoring.items()
                if path.startswith(f"{folder}/")}


@dataclass(frozen=True)
class Entry:
    output: str  # a file, or a folder the entry owns, relative to the checkout
    description: str
    produce: Callable[[Sources], Mapping[str, str]]  # path relative to the checkout -> text
    is_folder: bool

    def owns(self, path: str) -> bool:
        """Whether `path` (relative to the checkout, normalised: no `..`) is this entry's file or in its folder."""
        if posixpath.normpath(path) != path or posixpath.isabs(path):
            return False
        return path == self.output or (self.is_folder and path.startswith(f"{self.output}/"))

    def files(self, sources: Sources) -> dict[str, str]:
        files = dict(self.produce(sources))
        if outside := sorted(path for path in files if not self.owns(path)):
            raise ValueError(f"the producer of {self.output} made files outside it: {', '.join(outside)}")
        return files


def file(output: str, description: str, text: Callable[[Sources], str]) -> Entry:
    return Entry(output, description, lambda src: {output: text(src)}, is_folder=False)


def folder(output: str, description: str, files: Callable[[Sources], Mapping[str, str]]) -> Entry:
    return Entry(output, description, lambda src: {f"{output}/{rel}": text for rel, text in files(src).items()},
                 is_folder=True)


ENTRIES: tuple[Entry, ...] = (
    folder(rendered_dir("local"), "the manifests `ferry up` runs: per model a Workflow, its template, spec.json",
           lambda src: render_files(src.models, "local", workloads=src.workloads)),
    folder(rendered_dir("prod"), "the manifests Argo CD syncs: Argo, KubeRay, Argo Events, Prometheus, Grafana",
           lambda src: render_files(src.models, "prod", src.image_tag, src.workloads)),
    folder(MONITORING_GENERATED, "per-model rules and dashboards; the platform's PrometheusRule and dashboards",
           lambda src: src.monitoring_in(MONITORING_GENERATED)),
    file(monitoring.PLATFORM_RULES, "the platform alerts local Prometheus loads",
         lambda src: src.monitoring[monitoring.PLATFORM_RULES]),
    file(monitoring.LOCAL_ALERTMANAGER, "the local Alertmanager config (default receiver port)",
         lambda src: src.monitoring[monitoring.LOCAL_ALERTMANAGER]),
    file(SCHEMA_PATH, "the JSON Schema of a spec file, for editors", lambda src: model_schema_text(src.workloads)),
    file(docs.SPEC_PATH, "the spec reference, from the pydantic models", lambda _: docs.spec_reference()),
    file(docs.CLI_PATH, "the CLI reference, from the typer app", lambda src: docs.cli_reference(src.cli)),
    file(METRICS_DOC_PATH, "the metric catalogue's reference page", lambda _: metrics_markdown()),
)


class UnknownOutput(FerryError):
    exit_code = 2


def select(outputs: Sequence[str]) -> list[Entry]:
    """The entries for `outputs`: an entry's own path, a folder above entries, or a file inside a folder entry."""
    wanted = [posixpath.normpath(output.strip()) for output in outputs]
    if unknown := [o for o in wanted if not any(_matches(entry, o) for entry in ENTRIES)]:
        known = "\n".join(f"  {entry.output}" for entry in ENTRIES)
        raise UnknownOutput(f"no generated file or folder {', '.join(unknown)}; the generated outputs are:\n{known}")
    return [entry for entry in ENTRIES if not wanted or any(_matches(entry, o) for o in wanted)]


def _matches(entry: Entry, output: str) -> bool:
    return entry.owns(output) or entry.output.startswith(f"{output}/") or output == "."


def check(sources: Sources, entries: Sequence[Entry] = ENTRIES) -> dict[str, FileChanges]:
    """How the checkout differs from each entry's output (empty FileChanges: up to date); writes nothing."""
    return {entry.output: workspace.compare_files(sources.home, entry.files(sources), _owned(entry))
            for entry in entries}


def write(sources: Sources, entries: Sequence[Entry] = ENTRIES) -> dict[str, FileChanges]:
    """Write each entry's output, removing files an owned folder no longer holds; returns what changed."""
    return {entry.output: workspace.sync_files(sources.home, entry.files(sources), _owned(entry))
            for entry in entries}


def _owned(entry: Entry) -> str | None:
    return entry.output if entry.is_folder else None


def drift_report(results: Mapping[str, FileChanges], fix: str) -> list[str]:
    """One line per file out of date, then the command that brings them up to date; nothing when none is."""
    lines = [f"{kind:<8} {path}" for changes in results.values()
             for kind, paths in (("stale", changes.stale), ("missing", changes.missing), ("extra", changes.extra))
             for path in paths]
    return [*lines, f"{len(lines)} generated file(s) out of date: run `{fix}`"] if lines else []


# ------------------------------------------------------------------------------------------- commands


def run(ctx: typer.Context, outputs: Sequence[str], check_only: bool, fix: str, diff: bool = False) -> None:
    """What `ferry generate`, `ferry render` and `ferry schema` do for their entries."""
    sources = Sources(load_settings().home, ctx.find_root().command)
    entries = select(outputs)
    if check_only:
        _print_check(check(sources, entries), fix, diff)
    else:
        _print_written(write(sources, entries))


def _print_check(results: Mapping[str, FileChanges], fix: str, diff: bool) -> None:
    if report := drift_report(results, fix):
        if diff:
            console.print("".join(d for changes in results.values() for d in changes.diffs.values()),
                          markup=False, end="")
        console.print("\n".join(report[:-1]), markup=False)
        err_console.print(f"[red]stale[/red]: {report[-1]}")
        raise typer.Exit(1)
    for output in results:
        console.print(f"[green]up to date[/green] {output}")


def _print_written(results: Mapping[str, FileChanges]) -> None:
    for output, changes in results.items():
        for path in changes.stale + changes.missing:
            console.print(f"wrote {path}")
        for path in changes.extra:
            console.print(f"removed {path}")
        if not changes:
            console.print(f"{output} is up to date")


def generate(
    ctx: typer.Context,
    outputs: Annotated[list[str] | None, typer.Argument(
        help="Only these outputs: a generated file or folder, or a folder above some (e.g. monitoring).")] = None,
    check_only: Annotated[bool, typer.Option(
        "--check", help="Write nothing; exit 1 naming every stale, missing and extra file.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="With --check, also print a unified diff per file.")] = False,
    list_outputs: Annotated[bool, typer.Option("--list", help="Print every generated output and what it is.")] = False,
) -> None:
    """Write every committed generated file (rendered manifests, monitoring, references); --check finds drift."""
    if list_outputs:
        _print_entries(select(outputs or []))
        return
    run(ctx, outputs or [], check_only, fix=" ".join(["ferry generate", *(outputs or [])]), diff=diff)


def _print_entries(entries: Sequence[Entry]) -> None:
    named = {f"{entry.output}{'/' if entry.is_folder else ''}": entry.description for entry in entries}
    width = max(map(len, named))
    console.print("\n".join(f"{name:<{width}}  {text}" for name, text in named.items()), markup=False)
