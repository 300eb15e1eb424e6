"""`ferry lineage`: a version's origin read from its registry tags, its parents followed (memory registry)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ferry.adapters.registry_memory import MemoryRegistry
from ferry.adapters.registry_port import NotFound
from ferry.cli import lineage as lineage_cli
from ferry.cli.app import app
from ferry.contract import names
from ferry.rollout.lineage import lineage, parse_ref

MODEL = "fraud-detector"
runner = CliRunner()


def registered(registry: MemoryRegistry, parent: str = "", **more: str) -> str:
    tags = {names.TAG_WORKFLOW: f"{MODEL}-run-{len(registry.find_versions(MODEL)) + 1}",
            names.TAG_SPEC_HASH: "3f2a9c", names.TAG_GIT_COMMIT: "a1b2c3d", names.TAG_DATASET_DIGEST: "d1g35t",
            names.TAG_LINEAGE_PARENT: parent, names.TAG_LINEAGE_IMAGE: "ghcr.io/ferry-ml/ferry:0.1.0-abc",
            names.TAG_LINEAGE_DATA_SOURCE: "simulator", names.TAG_LINEAGE_DATA_ROWS: "67858",
            names.TAG_LINEAGE_DATA_RUN: "r-data", "metric.average_precision": "0.665", **more}
    return registry.register_version(MODEL, "runs:/r/model", "r", tags).version


@pytest.fixture
def registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.ensure_registered_model(MODEL, "risk")
    first = registered(registry)
    second = registered(registry, parent=first)
    registry.set_alias(MODEL, names.ALIAS_CHAMPION, second)
    registered(registry, parent=second)  # a challenger, evaluated against the champion
    return registry


def test_the_champion_by_default_with_its_facts_and_metrics(registry: MemoryRegistry) -> None:
    found = lineage(registry, MODEL)
    facts = dict(found.facts)
    assert found.version == "2" and found.aliases == (names.ALIAS_CHAMPION,)
    assert facts["pipeline run"] == f"{MODEL}-run-2" and facts["dataset digest"] == "d1g35t"
    assert facts["image"] == "ghcr.io/ferry-ml/ferry:0.1.0-abc" and facts["data rows"] == "67858"
    assert dict(found.metrics) == {"average_precision": "0.665"} and found.ancestors == ("1",)


def test_parents_are_followed_to_the_first_champion(registry: MemoryRegistry) -> None:
    assert lineage(registry, MODEL, "3").ancestors == ("2", "1")
    assert lineage(registry, MODEL, "1").ancestors == ()


def test_a_version_registered_before_lineage_shows_what_is_unknown(registry: MemoryRegistry) -> None:
    old = registry.register_version(MODEL, "runs:/r/model", "r", {names.TAG_SPEC_HASH: "0ld"}).version
    facts = dict(lineage(registry, MODEL, old).facts)
    assert facts["spec hash"] == "0ld" and facts["image"] == "" and facts["data source"] == ""


def test_a_tag_cycle_cannot_loop(registry: MemoryRegistry) -> None:
    registry.tag_version(MODEL, "1", {names.TAG_LINEAGE_PARENT: "3"})
    assert lineage(registry, MODEL, "3").ancestors == ("2", "1")


def test_unknown_alias_or_version_is_not_found_with_a_hint(registry: MemoryRegistry) -> None:
    with pytest.raises(NotFound, match=r"aliases: champion.*fraud-detector@1"):
        lineage(registry, MODEL, "challenger")
    with pytest.raises(NotFound):
        lineage(registry, MODEL, "99")


@pytest.mark.parametrize(("ref", "parsed"),
                         [("m", ("m", None)), ("m@4", ("m", "4")), ("m@champion", ("m", "champion"))])
def test_refs(ref: str, parsed: tuple[str, str | None]) -> None:
    assert parse_ref(ref) == parsed


def test_the_command_prints_the_facts_and_the_parents(registry: MemoryRegistry,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lineage_cli, "_registry", lambda: registry)
    result = runner.invoke(app, ["lineage", f"{MODEL}@3"], env={"COLUMNS": "140"})
    assert result.exit_code == 0, result.output
    for text in ("fraud-detector v3", "d1g35t", "ghcr.io/ferry-ml/ferry:0.1.0-abc", "metric average_precision",
                 "v3 <- v2 <- v1"):
        assert text in result.output
    missing = runner.invoke(app, ["lineage", f"{MODEL}@challenger"])
    assert missing.exit_code != 0 and "no version with alias 'challenger'" in missing.output
