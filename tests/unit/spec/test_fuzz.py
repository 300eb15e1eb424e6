"""Random YAML never crashes the loader: every outcome is a spec or a list of SpecErrors."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.spec import load_spec_text
from ferry.spec.checks import run_checks

EXAMPLE = (Path(__file__).resolve().parents[3] / "gitops/models/fraud-detector.yaml").read_text()
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
documents = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=5)), max_leaves=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(raw: bytes) -> None:
    spec, errors = load_spec_text(raw, "f.yaml")
    assert (spec is None) == bool(errors)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents_never_crash(doc: object) -> None:
    spec, errors = load_spec_text(yaml.safe_dump(doc), "f.yaml")
    assert (spec is None) == bool(errors)
    assert all(e.file == "f.yaml" and e.message for e in errors)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.lists(st.sampled_from(["spec", "training", "tune", "serving", "data", "params", "x"]), max_size=4),
       value=scalars)
def test_mutated_example_never_crashes(path: list[str], value: object) -> None:
    doc = yaml.safe_load(EXAMPLE)
    target = doc
    for key in path[:-1]:
        target = target.setdefault(key, {}) if isinstance(target, dict) else target
    if isinstance(target, dict) and path:
        target[path[-1]] = value
    spec, errors = load_spec_text(yaml.safe_dump(doc), "f.yaml")
    if spec is not None:
        run_checks([spec])
    assert all(e.path or e.line for e in errors)
