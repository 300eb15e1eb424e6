"""The gitops folder as the CLI sees it: validate, render to disk (or check for drift), plan."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ferry.adapters import git
from ferry.plan import Plan, make_plan
from ferry.render.bundle import render_files
from ferry.render.profiles import EnvName, rendered_dir
from ferry.spec.checks import WorkloadFacts, run_checks
from ferry.spec.errors import SpecError, SpecInvalid
from ferry.spec.loader import LoadedSpec, load_specs

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
class RenderResult:
    env: EnvName
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    drift: dict[str, str] = field(default_factory=dict)  # path -> unified diff

    @property
    def stale(self) -> bool:
        return bool(self.drift)


def render(home: Path, env: EnvName, check: bool = False,
           workloads: Mapping[str, WorkloadFacts] | None = None) -> RenderResult:
    specs = valid_specs(home, workloads)
    wanted = render_files([s.model for s in specs], env)
    out_dir = home / rendered_dir(env)
    existing = {p.relative_to(out_dir).as_posix(): p for p in out_dir.rglob("*") if p.is_file()} \
        if out_dir.exists() else {}
    result = RenderResult(env=env)
    for rel in sorted({*wanted, *existing}):
        old = existing[rel].read_text() if rel in existing else None
        new = wanted.get(rel)
        if old == new:
            continue
        if check:
            result.drift[rel] = _diff(rel, old or "", new or "")
        else:
            _apply(out_dir / rel, new, result, rel)
    return result


def _apply(path: Path, text: str | None, result: RenderResult, rel: str) -> None:
    if text is None:
        path.unlink()
        result.removed.append(rel)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    result.written.append(rel)


def _diff(rel: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"committed/{rel}", f"rendered/{rel}")
    return "".join(lines)


def plan(home: Path, base_ref: str, env: EnvName = "prod") -> Plan:
    head = valid_specs(home)
    base, errors = git.specs_at_ref(home, base_ref, MODELS_DIR)
    if errors:
        raise SpecInvalid(errors)
    return make_plan({s.name: s.model for s in base}, {s.name: s.model for s in head}, env)
