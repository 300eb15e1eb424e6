"""Workload parameters are part of the spec: `ferry validate` types `data.params`, `training.params` and the
tune space with the installed workload's models (fraud_detection here, found by its entry point), and the
JSON Schema for editors carries the same models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from ferry.adapters.workloads import workload_facts
from ferry.cli.app import app
from ferry.spec import load_spec_text, spec_hash
from ferry.spec.checks import run_checks
from ferry.spec.errors import SpecError
from ferry.spec.jsonschema import model_schema, model_schema_text
from ferry.spec.yamlsafe import read_spec_document

ROOT = Path(__file__).resolve().parents[3]
FACTS = workload_facts()
runner = CliRunner()

# (text in gitops/models/fraud-detector.yaml, its replacement, the field named, what the message says)
BAD_VALUES = [
    ("customers: 1000", "customers: -5", "spec.data.params.customers", "greater than or equal to 1, got -5"),
    ("customers: 1000", "customers: many", "spec.data.params.customers", "valid integer, got 'many'"),
    ("hidden: 64,", "hidden: -3,", "spec.training.params.hidden", "greater than or equal to 1, got -3"),
    ("hidden: 64,", "hidden: sixty,", "spec.training.params.hidden", "valid integer, got 'sixty'"),
    ("days: 60", "days: true", "spec.data.params.days", "valid integer, got True"),
    ("lr: 0.003", "lr: 0", "spec.training.params.lr", "greater than 0"),
    ("dropout: 0.1", "dropout: 1.0", "spec.training.params.dropout", "less than 1"),
    ("seed: 0}", "seed: 0, start_date: 2018-02-30}", "spec.data.params.start_date", "not a calendar date"),
    ("seed: 0}", "seed: 0, compromised_customers_per_day: 5000}",
     "spec.data.params.compromised_customers_per_day", "<= customers (1000)"),
]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def check(text: str) -> list[SpecError]:
    spec, errors = load_spec_text(text, "m.yaml")
    assert errors == [] and spec is not None, errors
    return run_checks([spec], FACTS)


def test_the_fraud_workload_is_installed_with_its_models() -> None:
    facts = FACTS["fraud_detection"]
    assert {"customers", "terminals", "days", "seed"} <= set(facts.data_params.model_fields)
    assert set(facts.training_params.model_fields) == {"hidden", "lr", "dropout", "weight_decay"}


def test_committed_specs_stay_valid() -> None:
    for path in sorted((ROOT / "gitops/models").glob("*.yaml")):
        assert check(path.read_text()) == [], path


@pytest.mark.parametrize(("old", "new", "field", "message"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_bad_value_names_field_and_line(example_text: str, old: str, new: str, field: str, message: str) -> None:
    text = example_text.replace(old, new, 1)
    [error] = check(text)
    assert (error.path, error.line) == (field, line_of(text, new)), error
    assert message in error.message, error


@pytest.mark.parametrize(("old", "new", "field", "message"), BAD_VALUES[:4], ids=[b[1] for b in BAD_VALUES[:4]])
def test_ferry_validate_fails_on_bad_value(example_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           old: str, new: str, field: str, message: str) -> None:
    text = example_text.replace(old, new, 1)
    (tmp_path / "m.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    result = runner.invoke(app, ["validate", "m.yaml"])
    assert result.exit_code != 0
    assert f"m.yaml:{line_of(text, new)}: {field}: " in result.output and message in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("old", "new", "field", "hint"), [
    ("customers: 1000", "custmers: 1000", "spec.data.params.custmers", "did you mean 'customers'?"),
    ("hidden: 64,", "hiden: 64,", "spec.training.params.hiden", "did you mean 'hidden'?"),
    ("hidden: {choice:", "hiden: {choice:", "spec.training.tune.space.hiden", "did you mean 'hidden'?"),
])
def test_misspelt_key_gets_did_you_mean(example_text: str, old: str, new: str, field: str, hint: str) -> None:
    text = example_text.replace(old, new, 1)
    [error] = check(text)
    assert (error.path, error.line, error.hint) == (field, line_of(text, new), hint), error


def test_space_key_the_training_params_do_not_know_fails(example_text: str) -> None:
    text = example_text.replace("hidden: {choice:", "momentum: {uniform: [0.1, 0.9]}\n        hidden: {choice:")
    [error] = check(text)
    assert error.path == "spec.training.tune.space.momentum" and "no tunable parameter 'momentum'" in error.message
    assert error.hint.startswith("known: ") and "hidden" in error.hint


@pytest.mark.parametrize(("domain", "field", "message"), [
    ("{choice: [32, -3, 128]}", "spec.training.tune.space.hidden.choice.1", "value -3 is not a valid 'hidden'"),
    ("{choice: [32, sixty]}", "spec.training.tune.space.hidden.choice.1", "valid integer"),
    ("{randint: [0, 128]}", "spec.training.tune.space.hidden.randint.0", "greater than or equal to 1"),
    ("{uniform: [16, 128]}", "spec.training.tune.space.hidden.uniform.0", "valid integer"),
])
def test_search_space_values_must_be_valid_params(example_text: str, domain: str, field: str, message: str) -> None:
    text = example_text.replace("hidden: {choice: [32, 64, 128]}", f"hidden: {domain}")
    [error] = check(text)
    assert error.path == field and message in error.message, error
    assert error.line == line_of(text, f"hidden: {domain}")
    if "uniform" in domain:
        assert "randint or choice" in error.hint


def test_valid_search_ranges_pass(example_text: str) -> None:
    text = example_text.replace("hidden: {choice: [32, 64, 128]}",
                                "hidden: {randint: [16, 128]}\n        dropout: {uniform: [0.0, 0.5]}")
    assert check(text) == []


def test_spec_hash_covers_params_as_written(example_text: str) -> None:
    def hash_of(text: str) -> str:
        spec, _ = load_spec_text(text, "m.yaml")
        assert spec is not None
        return spec_hash(spec.model)

    base = hash_of(example_text)
    assert hash_of(example_text.replace("customers: 1000", "customers: 1001")) != base
    assert hash_of(example_text.replace("hidden: 64,", "hidden: 32,")) != base
    # A default written out is still a change of the file: the hash is over the params as written.
    assert hash_of(example_text.replace("seed: 0}", "seed: 0, radius: 5.0}")) != base


def test_json_schema_has_the_workload_params(example_text: str) -> None:
    schema = model_schema(FACTS)
    defs = schema["$defs"]
    assert defs["fraud_detection.SimulatorParams"]["properties"]["customers"]["minimum"] == 1
    assert defs["fraud_detection.TrainingParams"]["additionalProperties"] is False
    rules = {rule["if"]["properties"]["workload"]["const"]: rule for rule in defs["ModelBody"]["allOf"]}
    assert set(rules) == set(FACTS) == {"fraud_detection", "recommender"}
    assert defs["recommender.DataParams"]["properties"]["max_users"]["anyOf"][0]["minimum"] == 10
    both = {**FACTS, "another": FACTS["fraud_detection"]}
    assert model_schema_text(both) == model_schema_text(dict(reversed(list(both.items()))))
    validator = jsonschema.Draft202012Validator(json.loads(model_schema_text(FACTS)))
    assert list(validator.iter_errors(read_spec_document(example_text.encode()).data)) == []
    for old, new, field, _ in BAD_VALUES[:4]:
        document = read_spec_document(example_text.replace(old, new, 1).encode()).data
        paths = {".".join(map(str, e.absolute_path)) for e in validator.iter_errors(document)}
        assert paths == {field}, (new, paths)


def test_json_schema_limits_the_tune_space(example_text: str) -> None:
    validator = jsonschema.Draft202012Validator(model_schema(FACTS))
    document = read_spec_document(example_text.replace("hidden: {choice:", "hiden: {choice:").encode()).data
    assert [e.validator for e in validator.iter_errors(document)] == ["enum"]


def test_number_yaml_reads_as_text_gets_a_hint(example_text: str) -> None:
    [error] = check(example_text.replace("lr: 0.003", "lr: 3e-3"))
    assert error.path == "spec.training.params.lr"
    assert error.hint == "YAML reads '3e-3' as text; write the number as 0.003"
