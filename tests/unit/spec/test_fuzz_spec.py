"""Spec files fuzzed the way people and tools break them: documents generated from the published JSON
Schema (mostly valid, then pushed off it: a wrong type, an unknown key, a missing field), text-level
mutations of the committed example (deleted, duplicated, re-indented, truncated lines, stray bytes) and
plain garbage. The loader, the semantic checks and `ferry validate` must never raise; every rejection
must name its file, a line inside the file and, for anything past the YAML syntax, the field.

Example counts are sized for CI (~20 s here); `pytest --hypothesis-profile=reliability` (what
`task reliability` runs) multiplies them by ten.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ferry.adapters.workloads import workload_facts
from ferry.cli.app import app
from ferry.spec import SpecError, load_spec_text
from ferry.spec.checks import run_checks

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((ROOT / "docs/reference/model.schema.json").read_text())
EXAMPLES = [(ROOT / "gitops/models" / name).read_text() for name in ("fraud-detector.yaml", "fraud-detector-lite.yaml")]
FACTS = workload_facts()
SCALE = 10 if settings.get_current_profile_name() == "reliability" else 1
# YAML syntax and file-level problems have no field; everything pydantic or a check rejects has one.
FILE_LEVEL = ("invalid YAML", "file ", "the document must be a mapping", "keys must be plain strings", "duplicate key",
              "a key is empty", "key ")


# Examples per property in CI; the reliability profile runs ten times as many (benchmarks/reliability/run.py).
BASE_EXAMPLES = {"test_schema_shaped_documents_load_or_name_their_field": 600,
                 "test_mutated_example_text_never_crashes": 600, "test_garbage_never_crashes": 400,
                 "test_random_bytes_are_rejected_with_the_file_named": 300,
                 "test_ferry_validate_cli_never_shows_a_traceback": 40}


def fuzz(test: str) -> Any:
    return settings(max_examples=BASE_EXAMPLES[test] * SCALE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


# --- documents from the JSON Schema --------------------------------------------------------------------


def _ref(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _number(schema: dict[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if integer:
        return st.integers(int(low) if low is not None else -10, int(high) if high is not None else 10_000)
    return st.floats(low if low is not None else -1e6, high if high is not None else 1e6,
                     exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema)


def _string(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if schema.get("format") == "date":
        return st.dates().map(str)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: len(s) < 60)
    return st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=schema.get("minLength", 0),
                   max_size=20)


def _object(schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    props = schema.get("properties")
    if props is None:
        values = from_schema(schema.get("additionalProperties") or {}, depth + 1)
        keys = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
        return st.dictionaries(keys, values, min_size=schema.get("minProperties", 0), max_size=3)
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {k: from_schema(v, depth + 1) for k, v in props.items() if k in required},
        optional={k: from_schema(v, depth + 1) for k, v in props.items() if k not in required})


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that follow `schema`'s structure (types, enums, bounds, patterns, required keys). Cross-field
    rules (min <= max, parquet needs a path) are not in the schema, so many documents still fail: wanted."""
    schema = _ref(schema)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(option, depth + 1) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        return _object(schema, depth)
    if kind == "array":
        if "prefixItems" in schema:
            return st.tuples(*(from_schema(item, depth + 1) for item in schema["prefixItems"])).map(list)
        return st.lists(from_schema(schema.get("items") or {}, depth + 1), min_size=schema.get("minItems", 0),
                        max_size=4)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "string":
        return _string(schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10))


WRONG = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8),
                  st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*prefix, i))
    return found


@st.composite
def schema_documents(draw: st.DrawFn) -> Any:
    """A schema-shaped document, then with some probability one edit that breaks it."""
    doc = draw(from_schema(SCHEMA))
    paths = _paths(doc)
    edit = draw(st.sampled_from(["none", "none", "wrong-value", "unknown-key", "drop-key"]))
    if edit == "none" or not paths:
        return doc
    path = draw(st.sampled_from(paths))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if edit == "wrong-value":
        parent[path[-1]] = draw(WRONG)
    elif edit == "unknown-key" and isinstance(parent, dict):
        parent[str(path[-1]) + draw(st.sampled_from(["s", "_x", "X"]))] = parent.pop(path[-1])
    elif edit == "drop-key" and isinstance(parent, dict):
        del parent[path[-1]]
    return doc


# --- text mutations of the committed examples ----------------------------------------------------------


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(EXAMPLES)).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "truncate", "insert", "swap"]))
        if how == "delete":
            del lines[i]
        elif how == "duplicate":
            lines.insert(i, lines[i])
        elif how == "indent":
            lines[i] = " " * draw(st.integers(1, 4)) + lines[i]
        elif how == "dedent":
            lines[i] = lines[i].lstrip()
        elif how == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]) - 1)))]
        elif how == "insert":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(st.sampled_from(":{}[]-,&*!|>'\"#%@`\t ?x1"), max_size=3)) \
                + lines[i][at:]
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            break
    return "\n".join(lines) + "\n"


# --- what every outcome must satisfy -------------------------------------------------------------------


def assert_well_formed(text: str, file: str = "gitops/models/m.yaml") -> list[SpecError]:
    """Load and check `text`; assert each error names the file, a line that exists and (past YAML) a field
    whose key is on that line. Returns the errors."""
    spec, errors = load_spec_text(text, file)
    assert (spec is None) == bool(errors)
    if spec is not None:
        errors = run_checks([spec], FACTS)
    lines = text.splitlines()
    for error in errors:
        assert error.file == file and error.message, error
        formatted = error.format()
        assert formatted.startswith(f"{file}:"), formatted
        if error.message.startswith(FILE_LEVEL) and not error.path:
            assert error.line == 0 or 1 <= error.line <= max(1, len(lines) + 1), error
            continue
        assert error.path, f"a schema or semantic error without a field: {error}"
        assert 1 <= error.line <= len(lines), (error, len(lines))
        assert f"{file}:{error.line}: {error.path}:" in formatted
        assert _names_a_key_on_its_line(error, lines[error.line - 1]) or error.line == _first_key_line(lines), \
            (error, lines[error.line - 1])
    return errors


def _names_a_key_on_its_line(error: SpecError, line: str) -> bool:
    """The line an error points at holds one of the keys on its field path (a missing key points at its
    parent; a list item's line starts with '-'); the root document's own line is 1."""
    keys = [part for part in error.path.split(".") if part]  # '0' may be a key as well as a list index
    # block style `key:`, or flow style where the key ends at ',' '}' or the end of the line
    if any(re.search(rf"(^|[\s{{,'\"-]){re.escape(key)}['\"]?\s*(:|,|}}|$)", line) for key in keys):
        return True
    return line.lstrip().startswith(("-", "?")) or error.line == 1


def _first_key_line(lines: list[str]) -> int:
    """Where the root mapping starts: a missing top-level key points there."""
    starts = (i + 1 for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith(("#", "---")))
    return next(starts, 1)


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, default_flow_style=False, sort_keys=False, allow_unicode=True)


# --- the properties ------------------------------------------------------------------------------------


@fuzz("test_schema_shaped_documents_load_or_name_their_field")
@given(schema_documents())
def test_schema_shaped_documents_load_or_name_their_field(doc: Any) -> None:
    assert_well_formed(dump(doc))


@fuzz("test_mutated_example_text_never_crashes")
@given(mutated_text())
def test_mutated_example_text_never_crashes(text: str) -> None:
    assert_well_formed(text)


@fuzz("test_garbage_never_crashes")
@given(st.one_of(st.binary(max_size=400).map(lambda b: b.decode("utf-8", "replace")),
                 st.text(max_size=300),
                 st.text(st.sampled_from("abc:-[]{}\n #'\"!&*|>%@`?,0.\t"), max_size=200)))
def test_garbage_never_crashes(text: str) -> None:
    assert_well_formed(text)


@fuzz("test_random_bytes_are_rejected_with_the_file_named")
@given(st.binary(max_size=300))
def test_random_bytes_are_rejected_with_the_file_named(raw: bytes) -> None:
    spec, errors = load_spec_text(raw, "m.yaml")
    assert (spec is None) == bool(errors) and all(e.file == "m.yaml" and e.message for e in errors)


def test_a_wrong_value_points_at_its_own_line() -> None:
    text = EXAMPLES[1].replace("epochs: 3", "epochs: three")
    [error] = assert_well_formed(text)
    assert error.path == "spec.training.epochs" and "epochs: three" in text.splitlines()[error.line - 1]
    [typo] = assert_well_formed(EXAMPLES[1].replace(" batch_size:", " batchsize:"))
    assert typo.path == "spec.training.batchsize" and typo.hint == "did you mean 'batch_size'?"


CLI_FILES = st.lists(st.one_of(schema_documents().map(dump), mutated_text()), min_size=1, max_size=3)


@fuzz("test_ferry_validate_cli_never_shows_a_traceback")
@given(CLI_FILES)
def test_ferry_validate_cli_never_shows_a_traceback(texts: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(texts):
            (Path(tmp) / f"m{i}.yaml").write_text(text)
        result = CliRunner().invoke(app, ["validate", tmp], catch_exceptions=True)
    output = result.stdout + result.stderr
    assert result.exit_code in (0, 1), output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    if result.exit_code == 1:
        assert re.search(rf"{re.escape(tmp)}/m\d\.yaml(:\d+)?: ", output.replace("\n", "")), output
