"""One behavioural suite for every `RegistryPort` implementation: the in-memory one (tests/unit/adapters)
and MLflow's against a real server (tests/integration/test_registry_contract.py). A subclass provides the
fixtures `registry` (reachable), `down` (the same kind of registry, unreachable) and `run_id` (a run the
registry can store a drift reference with); each test works on its own fresh model name."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from ferry.adapters.registry_port import (
    NotFound,
    RegistryError,
    RegistryPort,
    RegistryUnavailable,
    RolloutView,
    VersionFacts,
)
from ferry.contract import names
from ferry.stats.reference import build_reference

SOURCE = "s3://ferry-contract/model"  # any non-local URI: MLflow refuses a local path without a run


def registered(registry: RegistryPort, model: str, count: int = 1, **tags: object) -> list[str]:
    registry.ensure_registered_model(model, "contract")
    return [registry.register_version(model, f"{SOURCE}/{i}", tags=tags).version for i in range(count)]


class RegistryContract:
    @pytest.fixture
    def model(self) -> str:
        return f"contract-{uuid.uuid4().hex[:10]}"

    def test_versions_are_numbered_from_one_per_model(self, registry: RegistryPort, model: str) -> None:
        assert registered(registry, model, 3) == ["1", "2", "3"]
        assert registered(registry, f"{model}-other", 1) == ["1"]
        registry.ensure_registered_model(model, "someone else")  # exists already: changes nothing
        assert registered(registry, model, 1) == ["4"]

    def test_a_version_needs_its_registered_model(self, registry: RegistryPort, model: str) -> None:
        with pytest.raises(NotFound):
            registry.register_version(model, SOURCE)

    def test_a_version_reads_back_with_text_tags(self, registry: RegistryPort, model: str) -> None:
        registry.ensure_registered_model(model, "contract")
        created = registry.register_version(model, SOURCE, tags={names.TAG_ROLLOUT_WEIGHT: 25, "k": "v"})
        found = registry.version(model, created.version)
        assert (found.model, found.version, found.number, found.source) == (model, "1", 1, SOURCE)
        assert found.run_id is None and found.status == "READY" and found.aliases == ()
        assert dict(found.tags) == {names.TAG_ROLLOUT_WEIGHT: "25", "k": "v"} and found.weight == 25
        assert abs(found.created_at_s - time.time()) < 120

    def test_missing_versions_and_models_are_not_found(self, registry: RegistryPort, model: str) -> None:
        for call in (lambda: registry.version(model, "1"), lambda: registry.tag_version(model, "1", {"k": 1})):
            with pytest.raises(NotFound):
                call()
        registered(registry, model)
        with pytest.raises(NotFound):
            registry.version(model, "2")
        with pytest.raises(NotFound):
            registry.tag_version(model, "2", {"k": "v"})

    def test_find_versions_filters_by_tags_newest_first(self, registry: RegistryPort, model: str) -> None:
        assert registry.find_versions(model) == []
        registered(registry, model, 2, **{names.TAG_SPEC_HASH: "abc"})
        registered(registry, model, 1, **{names.TAG_SPEC_HASH: "def", names.TAG_WORKFLOW: "wf-1"})
        assert [v.version for v in registry.find_versions(model)] == ["3", "2", "1"]
        assert [v.version for v in registry.versions_with_hash(model, "abc")] == ["2", "1"]
        assert registry.versions_with_hash(model, "nope") == []
        found = registry.version_for_workflow(model, "wf-1")
        assert found is not None and found.version == "3" and registry.version_for_workflow(model, "wf-2") is None

    def test_tags_merge_and_overwrite(self, registry: RegistryPort, model: str) -> None:
        (version,) = registered(registry, model, 1, a="1")
        registry.tag_version(model, version, {"b": 2.5, "a": "x"})
        assert dict(registry.version(model, version).tags) == {"a": "x", "b": "2.5"}

    def test_aliases_point_move_and_go(self, registry: RegistryPort, model: str) -> None:
        assert registry.aliases(model) == {} and registry.alias(model, names.ALIAS_CHAMPION) is None
        one, two = registered(registry, model, 2)
        assert registry.alias(model, names.ALIAS_CHAMPION) is None
        registry.set_alias(model, names.ALIAS_CHAMPION, one)
        registry.set_alias(model, names.ALIAS_CHALLENGER, two)
        registry.set_alias(model, names.ALIAS_CHAMPION, two)  # an alias names one version: it moves
        assert registry.aliases(model) == {names.ALIAS_CHAMPION: two, names.ALIAS_CHALLENGER: two}
        champion = registry.alias(model, names.ALIAS_CHAMPION)
        assert champion is not None and champion.version == two
        assert set(registry.version(model, two).aliases) == {names.ALIAS_CHAMPION, names.ALIAS_CHALLENGER}
        assert registry.version(model, one).aliases == ()
        registry.delete_alias(model, names.ALIAS_CHALLENGER)
        registry.delete_alias(model, names.ALIAS_CHALLENGER)  # not set any more: nothing to do
        assert registry.aliases(model) == {names.ALIAS_CHAMPION: two}

    def test_alias_writes_need_the_version(self, registry: RegistryPort, model: str) -> None:
        with pytest.raises(NotFound):
            registry.set_alias(model, names.ALIAS_CHAMPION, "1")
        with pytest.raises(NotFound):
            registry.delete_alias(model, names.ALIAS_CHAMPION)
        registered(registry, model)
        with pytest.raises(NotFound):
            registry.set_alias(model, names.ALIAS_CHAMPION, "2")
        with pytest.raises(RegistryError) as reserved:
            registry.set_alias(model, "v1", "1")  # MLflow keeps `v<n>` and `latest` for version lookups
        assert not isinstance(reserved.value, NotFound | RegistryUnavailable)

    def test_rollout_view_reads_aliases_and_the_weight(self, registry: RegistryPort, model: str) -> None:
        assert registry.rollout_view(model) == RolloutView()
        one, two = registered(registry, model, 2, **{names.TAG_ROLLOUT_WEIGHT: "0"})
        registry.set_alias(model, names.ALIAS_CHAMPION, one)
        assert registry.rollout_view(model) == RolloutView(one, None, 0)
        registry.set_alias(model, names.ALIAS_CHALLENGER, two)
        for raw, weight in ((25, 25), ("50.7", 50), ("250", 100), ("-3", 0), ("many", 0), ("nan", 0)):
            registry.tag_version(model, two, {names.TAG_ROLLOUT_WEIGHT: raw})
            assert registry.rollout_view(model) == RolloutView(one, two, weight), raw

    def test_a_drift_reference_round_trips(self, registry: RegistryPort, model: str, run_id: str) -> None:
        rows = np.random.default_rng(0).normal(size=(200, 2))
        reference = build_reference(rows, ("a", "b"), rows[:, 0])
        uri = registry.log_reference(run_id, reference)
        (version,) = registered(registry, model)
        assert registry.version_facts(model, version) == VersionFacts(None, None)
        registry.tag_version(model, version, {names.TAG_REFERENCE: uri, names.TAG_TRAINED_AT: "2026-01-02T03:04:05Z"})
        facts = registry.version_facts(model, version)
        assert facts.reference == reference and facts.trained_at_s == 1767323045.0
        registry.tag_version(model, version, {names.TAG_REFERENCE: "runs:/fedcba9876543210/ferry/reference.json"})
        with pytest.raises(NotFound):  # a run that does not exist (or never stored one)
            registry.version_facts(model, version)

    def test_an_unreachable_registry_raises_never_reads_as_empty(self, down: RegistryPort, model: str) -> None:
        calls = [lambda: down.alias(model, names.ALIAS_CHAMPION), lambda: down.aliases(model),
                 lambda: down.rollout_view(model), lambda: down.find_versions(model),
                 lambda: down.version(model, "1"), lambda: down.set_alias(model, names.ALIAS_CHAMPION, "1"),
                 lambda: down.delete_alias(model, names.ALIAS_CHALLENGER),
                 lambda: down.tag_version(model, "1", {"k": "v"}), lambda: down.ensure_registered_model(model, "o")]
        for call in calls:
            with pytest.raises(RegistryUnavailable):
                call()
