"""The gitops folder as the CLI sees it: validate, render to disk, plan; and the one way generated files are
written and compared with the checkout (`compare_files`, `sync_files`, used by ferry.cli.generated)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ferry.adapters import git, image_build
from ferry.plan import Plan, make_plan
from ferry.render.bundle import render_files
from ferry.render.profiles import EnvName, rendered_dir
from ferry.spec.checks import WorkloadFacts, run_checks
from ferry.spec.errors import SpecError, SpecInvalid
from ferry.spec.loader import LoadedSpec, load_specs
from ferry.spec.models import ModelSpec

MODELS_DIR = "gitops/models"


@dataclass
class Validation:
    specs: list[LoadedSpec]
    errors: list[SpecError]
    files: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def validate(paths: Sequence[Path], workloads: Mapping[str, WorkloadFacts] | None = None) -> Validation:
    specs, errors = load_specs(paths)
    errors = sorted(errors + run_checks(specs, workloads))
    return Validation(specs=specs, errors=errors, files=len({s.file for s in specs} | {e.file for e in errors}))


def valid_specs(home: Path, workloads: Mapping[str, WorkloadFacts] | None = None) -> list[LoadedSpec]:
    result = validate([home / MODELS_DIR], workloads)
    if not result.ok:
        raise SpecInvalid(result.errors)
    return result.specs


@dataclass
class FileChanges:
    """How files on disk differ from the text generated for them; paths relative to the checkout."""

    stale: list[str] = field(default_factory=list)  # on disk, with other text
    missing: list[str] = field(default_factory=list)  # generated, not on disk
    extra: list[str] = field(default_factory=list)  # in an owned folder, but generated no more
    diffs: dict[str, str] = field(default_factory=dict)  # path -> unified diff, on disk -> generated

    def __bool__(self) -> bool:
        return bool(self.stale or self.missing or self.extra)


def compare_files(home: Path, wanted: Mapping[str, str], folder: str | None = None) -> FileChanges:
    """What differs between `wanted` and the checkout. A `folder` is owned: a file in it not in `wanted` is extra."""
    owned = home / folder if folder else None
    existing = {p.relative_to(home).as_posix() for p in owned.rglob("*") if p.is_file()} \
        if owned and owned.is_dir() else set()
    changes = FileChanges()
    for rel in sorted({*wanted, *existing}):
        path = home / rel
        old = path.read_text() if path.is_file() else None
        new = wanted.get(rel)
        if old == new:
            continue
        (changes.extra if new is None else changes.missing if old is None else changes.stale).append(rel)
        changes.diffs[rel] = _diff(rel, old or "", new or "")
    return changes


def sync_files(home: Path, wanted: Mapping[str, str], folder: str | None = None) -> FileChanges:
    """Make the checkout hold `wanted` (removing extra files from an owned `folder`); returns what changed."""
    changes = compare_files(home, wanted, folder)
    for rel in changes.extra:
        (home / rel).unlink()
    for rel in changes.stale + changes.missing:
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(wanted[rel])
    return changes


def rendered_files(home: Path, env: EnvName, workloads: Mapping[str, WorkloadFacts] | None = None) -> dict[str, str]:
    """Every file of gitops/rendered/<env>/, keyed by its path relative to the rendered folder."""
    tag = image_build.base_tag(home) if env == "prod" else None  # local mode runs no image
    return render_files([s.model for s in valid_specs(home, workloads)], env, tag, workloads)


def render(home: Path, env: EnvName, workloads: Mapping[str, WorkloadFacts] | None = None) -> FileChanges:
    """Write gitops/rendered/<env>/ (what `ferry up` runs); `ferry generate` checks it with every other file."""
    folder = rendered_dir(env)
    wanted = {f"{folder}/{rel}": text for rel, text in rendered_files(home, env, workloads).items()}
    return sync_files(home, wanted, folder)


def _diff(rel: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"committed/{rel}", f"generated/{rel}")
    return "".join(lines)


def plan(home: Path, base_ref: str, env: EnvName = "prod",
         workloads: Mapping[str, WorkloadFacts] | None = None) -> Plan:
    base, head = plan_sides(home, base_ref)
    return make_plan(base, head, env, workloads)


def plan_sides(home: Path, base_ref: str) -> tuple[dict[str, ModelSpec], dict[str, ModelSpec]]:
    """The specs at `base_ref` and in the working tree, by model name (both validated)."""
    head = valid_specs(home)
    base, errors = git.specs_at_ref(home, base_ref, MODELS_DIR)
    if errors:
        raise SpecInvalid(errors)
    return {s.name: s.model for s in base}, {s.name: s.model for s in head}
