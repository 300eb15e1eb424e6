"""The controller's writes, driven by an in-memory registry, a fake clock and scripted observations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from ferry.adapters.prometheus import PrometheusUnavailable
from ferry.render import names
from ferry.rollout.controller import Controller
from ferry.rollout.metrics import RolloutMetrics
from ferry.rollout.policy import Action, Observation, VariantStats
from ferry.spec import load_specs

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class MemoryRegistry:
    aliases: dict[str, str] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    weights: list[str] = field(default_factory=list)
    fail_next: int = 0

    def alias(self, model: str, alias: str):  # type: ignore[no-untyped-def]
        version = self.aliases.get(alias)
        return SimpleNamespace(version=version) if version else None

    def set_alias(self, model: str, alias: str, version: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("mlflow down")
        self.aliases[alias] = version

    def delete_alias(self, model: str, alias: str) -> None:
        self.aliases.pop(alias, None)

    def tag_version(self, model: str, version: str, tags: dict) -> None:
        self.tags.setdefault(version, {}).update({k: str(v) for k, v in tags.items()})
        if names.TAG_ROLLOUT_WEIGHT in tags:
            self.weights.append(str(tags[names.TAG_ROLLOUT_WEIGHT]))


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def spec():  # type: ignore[no-untyped-def]
    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    return specs[0].model


def controller(registry: MemoryRegistry, observe) -> Controller:  # type: ignore[no-untyped-def]
    return Controller(registry, spec(), observe, FakeClock(), RolloutMetrics(CollectorRegistry()))  # type: ignore[arg-type]


def healthy(champion: str, challenger: str) -> Observation:
    return Observation(VariantStats(2000, 20, 10), VariantStats(500, 5, 11), 0.01)


def erroring(champion: str, challenger: str) -> Observation:
    return Observation(VariantStats(2000, 20, 10), VariantStats(500, 60, 11), 0.01)


def silent(champion: str, challenger: str) -> Observation:
    raise PrometheusUnavailable("connection refused")


def test_first_version_is_promoted_directly() -> None:
    registry = MemoryRegistry()
    outcome = controller(registry, healthy).run("1")
    assert outcome.action is Action.PROMOTE and registry.aliases == {"champion": "1"}


def test_good_challenger_walks_the_steps_and_is_promoted() -> None:
    registry = MemoryRegistry(aliases={"champion": "1"})
    outcome = controller(registry, healthy).run("2")
    assert outcome.action is Action.PROMOTE
    assert registry.weights == ["10", "25", "50", "100"]
    assert registry.aliases == {"champion": "2"}
    assert registry.tags["1"][names.TAG_ROLLOUT_STATE] == "retired"
    assert "ferry.rollout.check.001" in registry.tags["2"]


def test_erroring_challenger_is_rolled_back_after_failure_limit() -> None:
    registry = MemoryRegistry(aliases={"champion": "1"})
    outcome = controller(registry, erroring).run("2")
    assert outcome.action is Action.ROLLBACK and outcome.checks == 2
    assert registry.aliases == {"champion": "1"}
    assert registry.tags["2"][names.TAG_ROLLOUT_STATE] == "rolled-back"
    assert registry.weights[-1] == "0"


def test_no_metrics_never_promotes_and_times_out() -> None:
    registry = MemoryRegistry(aliases={"champion": "1"})
    outcome = controller(registry, silent).run("2")
    assert outcome.action is Action.ROLLBACK and "no evidence within 10m" in outcome.reason
    assert registry.aliases == {"champion": "1"}


def test_registry_outage_is_retried() -> None:
    registry = MemoryRegistry(aliases={"champion": "1"}, fail_next=2)
    assert controller(registry, healthy).run("2").action is Action.PROMOTE
