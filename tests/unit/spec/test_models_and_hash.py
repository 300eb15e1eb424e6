"""Model-level rules and the spec hash: training fields change it, nothing else does."""

from __future__ import annotations

from ferry.spec import load_spec_text, spec_hash


def model_of(text: str):
    spec, errors = load_spec_text(text, "m.yaml")
    assert errors == [], errors
    return spec.model


def test_hash_ignores_serving_rollout_monitoring(example_text: str) -> None:
    base = spec_hash(model_of(example_text))
    for old, new in [("max_batch_size: 32", "max_batch_size: 16"), ("interval: 30s", "interval: 1m"),
                     ("drift_psi_alert: 0.25", "drift_psi_alert: 0.3"), ('"0 3 * * 1"', '"0 4 * * 1"')]:
        assert spec_hash(model_of(example_text.replace(old, new))) == base, old


def test_hash_follows_training_and_data(example_text: str) -> None:
    base = spec_hash(model_of(example_text))
    for old, new in [("epochs: 6", "epochs: 7"), ("seed: 0", "seed: 1"), ("num_samples: 4", "num_samples: 5")]:
        assert spec_hash(model_of(example_text.replace(old, new))) != base, old


def test_hash_is_stable_across_key_order(example_text: str) -> None:
    swapped = example_text.replace("{customers: 1000, terminals: 2000", "{terminals: 2000, customers: 1000")
    assert spec_hash(model_of(swapped)) == spec_hash(model_of(example_text))


def test_data_path_traversal_and_schemes_rejected(example_text: str) -> None:
    for path in ["../etc/passwd", "/abs.parquet", "s3://bucket/x.parquet", "a/../../b.parquet"]:
        text = example_text.replace("source: simulator", f"source: parquet\n    path: {path!r}")
        _, errors = load_spec_text(text, "m.yaml")
        assert any(e.path == "spec.data.path" for e in errors), path


def test_name_must_be_dns_label(example_text: str) -> None:
    _, errors = load_spec_text(example_text.replace("name: fraud-detector", "name: Fraud_Detector"), "m.yaml")
    assert [e.path for e in errors] == ["metadata.name"]


def test_a_data_field_added_later_changes_no_hash_until_it_is_used(example_text: str) -> None:
    """`data.window` came after specs were hashed: a spec without it keeps the hash it had (a new one retrains)."""
    from ferry.spec.models import training_view

    assert "window" not in training_view(model_of(example_text))["data"]
    simulated = 'source: simulator\n    params: {customers: 1000, terminals: 2000, days: 60, seed: 0}\n' \
                '    split: {train_start: "2018-05-02", '
    logged = example_text.replace(simulated, "source: log\n    window: {days: 28}\n    split: {")
    assert spec_hash(model_of(logged)) != spec_hash(model_of(logged.replace("days: 28}", "days: 29}")))
