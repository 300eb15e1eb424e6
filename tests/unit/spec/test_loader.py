"""The loader turns every malformed or invalid file into SpecErrors with line numbers and hints."""

from __future__ import annotations

import time

import pytest

from ferry.spec import load_spec_text


def errors_of(text: str | bytes) -> list:
    spec, errors = load_spec_text(text, "m.yaml")
    assert spec is None
    return errors


def test_example_loads(example_text: str) -> None:
    spec, errors = load_spec_text(example_text, "m.yaml")
    assert errors == [] and spec is not None
    assert spec.model.spec.training.tune is not None
    assert spec.model.spec.training.tune.space["lr"].kind == "loguniform"


def test_unknown_key_gets_line_and_did_you_mean(example_text: str) -> None:
    text = example_text.replace("    epochs: 6", "    epocs: 6")
    [error] = errors_of(text)
    assert error.path == "spec.training.epocs"
    assert error.hint == "did you mean 'epochs'?"
    assert error.line == next(i for i, line in enumerate(text.splitlines(), 1) if "epocs" in line)
    assert error.format().startswith("m.yaml:")


def test_unknown_key_inside_search_space(example_text: str) -> None:
    text = example_text.replace("lr: {loguniform:", "lr: {lgouniform:")
    found = errors_of(text)
    assert any(e.path.endswith("space.lr.lgouniform") and "loguniform" in e.hint for e in found)


def test_literal_typo_gets_hint(example_text: str) -> None:
    [error] = errors_of(example_text.replace("scheduler: asha", "scheduler: ahsa"))
    assert error.path == "spec.training.tune.scheduler" and "asha" in error.hint


def test_every_error_reported_in_one_pass(example_text: str) -> None:
    text = example_text.replace("epochs: 6", "epochs: -1").replace("route: /fraud-detector", "route: nope")
    paths = {e.path for e in errors_of(text)}
    assert {"spec.training.epochs", "spec.serving.route"} <= paths


def test_missing_field_points_at_parent(example_text: str) -> None:
    text = example_text.replace("    oncall: {team: risk, severity: page}\n", "")
    [error] = errors_of(text)
    assert error.path == "spec.monitoring.oncall" and "add `oncall:`" in error.hint


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("   \n\n", "empty"),
        (b"\x00\x01binary", "binary"),
        (b"\xff\xfe\x00a", "binary"),
        (b"caf\xe9: 1", "UTF-8"),
        ("- a\n- b\n", "mapping"),
        ("just a string", "mapping"),
        ("a: 1\n---\nb: 2\n", "several"),
        ("a: [1, 2\nb: 3", "invalid YAML"),
        ("a: 1\na: 2\n", "duplicate key"),
        ("a: &x 1\nb: *x\n", "aliases"),
        ("a: !!python/object:os.system {}\n", "invalid YAML"),
    ],
)
def test_malformed_yaml_is_rejected_clearly(text: str | bytes, needle: str) -> None:
    [error] = errors_of(text)
    assert needle in error.message


def test_duplicate_key_names_both_lines() -> None:
    [error] = errors_of("a: 1\nb: 2\na: 3\n")
    assert error.line == 3 and "line 1" in error.message


def test_alias_bomb_is_rejected_quickly() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    started = time.perf_counter()
    [error] = errors_of("\n".join(lines))
    assert "aliases" in error.message
    # expanding the bomb is 9**9 list items (minutes and GiBs); a loaded CI machine must not fail the check
    assert time.perf_counter() - started < 10.0


def test_deep_nesting_is_rejected() -> None:
    [error] = errors_of("a: " + "[" * 5000 + "]" * 5000)
    assert "invalid YAML" in error.message


def test_oversized_file_is_rejected() -> None:
    [error] = errors_of("a: " + "x" * 2_000_000)
    assert "limited" in error.message


def test_yaml11_booleans_and_dates_stay_strings(example_text: str) -> None:
    text = example_text.replace("owner: risk-ml", "owner: on")
    spec, errors = load_spec_text(text, "m.yaml")
    assert errors == [] and spec is not None
    assert spec.model.metadata.owner == "on"
