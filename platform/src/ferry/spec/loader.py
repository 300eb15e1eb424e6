"""Load spec files into `ModelSpec`s, turning every problem into a `SpecError` with file and line."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ferry.spec.errors import SpecError
from ferry.spec.introspect import valid_keys_at
from ferry.spec.models import ModelSpec
from ferry.spec.yamlsafe import YamlDocument, YamlProblem, read_spec_document

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedSpec:
    file: str
    model: ModelSpec
    document: YamlDocument

    def line_of(self, *path: str | int) -> int:
        return self.document.line_of(path)

    @property
    def name(self) -> str:
        return self.model.metadata.name


def load_spec_text(raw: bytes | str, file: str) -> tuple[LoadedSpec | None, list[SpecError]]:
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        document = read_spec_document(data)
    except YamlProblem as problem:
        return None, [SpecError(file, problem.line, "", problem.message, problem.hint)]
    try:
        model = ModelSpec.model_validate(document.data)
    except ValidationError as exc:
        return None, validation_errors(file, document, exc)
    return LoadedSpec(file, model, document), []


def load_spec_file(path: Path, display: str | None = None) -> tuple[LoadedSpec | None, list[SpecError]]:
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [SpecError(name, 0, "", f"cannot read file: {exc.strerror or exc}")]
    return load_spec_text(raw, name)


def expand_paths(paths: Iterable[Path]) -> tuple[list[Path], list[SpecError]]:
    """Directories stand for the spec files directly inside them, in sorted order."""
    files: list[Path] = []
    errors: list[SpecError] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file()))
        elif path.exists():
            files.append(path)
        else:
            errors.append(SpecError(str(path), 0, "", "no such file or directory"))
    return files, errors


def load_specs(paths: Sequence[Path]) -> tuple[list[LoadedSpec], list[SpecError]]:
    """Load every file, collecting every error instead of stopping at the first."""
    files, errors = expand_paths(paths)
    specs: list[LoadedSpec] = []
    for file in files:
        spec, file_errors = load_spec_file(file)
        errors.extend(file_errors)
        if spec is not None:
            specs.append(spec)
    return specs, errors


def validation_errors(file: str, document: YamlDocument, exc: ValidationError, root: type[BaseModel] = ModelSpec,
                      prefix: tuple[str | int, ...] = ()) -> list[SpecError]:
    """pydantic's errors as SpecErrors. `root` validated the part of the document found at `prefix`
    (a workload's params model validates `spec.data.params`): lines and field paths take the prefix,
    did-you-mean hints come from `root`'s fields."""
    return [_to_spec_error(file, document, err, root, prefix) for err in exc.errors(include_url=False)]


def _to_spec_error(file: str, document: YamlDocument, err: ErrorDetails, root: type[BaseModel],
                   prefix: tuple[str | int, ...]) -> SpecError:
    inner = tuple(err["loc"])
    loc = (*prefix, *inner)
    path = ".".join(str(part) for part in loc)
    message = err["msg"].removeprefix("Value error, ")
    hint = ""
    if err["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
        hint = _closest_key_hint(root, inner)
    elif err["type"] == "missing":
        message = "required field is missing"
        hint = f"add `{loc[-1]}:`"
    elif err["type"] == "literal_error":
        hint = _closest_literal_hint(err)
    if err["type"] not in ("extra_forbidden", "missing", "value_error", "assertion_error"):
        message += _got(err.get("input"))
    return SpecError(file, document.line_of(loc), path, message, hint or _number_as_text_hint(err))


def _number_as_text_hint(err: ErrorDetails) -> str:
    """YAML 1.1 reads `1e-3` (no dot) as a string; a strict number field then refuses what looks fine."""
    value = err.get("input")
    if err["type"] not in ("float_type", "int_type") or not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    return f"YAML reads {value!r} as text; write the number as {number!r}" if math.isfinite(number) else ""


def _got(value: object) -> str:
    """', got <value>' for a scalar (our own validators say it themselves; containers would be noise)."""
    if not isinstance(value, str | int | float | bool):
        return ""
    text = repr(value)
    return f", got {text if len(text) <= 40 else text[:37] + '...'}"


def _closest_key_hint(root: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    keys = valid_keys_at(root, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid keys here: {', '.join(keys)}" if keys else ""


def _closest_literal_hint(err: ErrorDetails) -> str:
    expected = str((err.get("ctx") or {}).get("expected", ""))
    options = [part.strip(" '") for part in expected.replace(" or ", ",").split(",") if part.strip(" '")]
    close = difflib.get_close_matches(str(err.get("input")), options, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else ""
