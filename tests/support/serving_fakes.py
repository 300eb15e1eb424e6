"""Serving unit tests' helpers: the in-memory registry holding torch 'models' per version, a recording
metrics sink, and transactions."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ferry.adapters.registry_memory import MemoryRegistry
from ferry.adapters.registry_port import RegistryPort, RolloutView
from ferry.contract import names
from ferry.serving.service import ScoringService, WorkloadView
from ferry.serving.watcher import RegistryWatcher
from fraud_detection.workload import FraudDetectionWorkload

MODEL = "fraud-detector"


class FakeScorer:
    """Stands in for a loaded torch.export program: a score that grows with tx_amount (column 0)."""

    def __init__(self, version: str, fail: bool = False) -> None:
        self.version = version
        self.fail = fail
        self.calls: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        if self.fail:
            raise RuntimeError(f"version {self.version} is broken")
        return torch.sigmoid((x[:, 0] - 100.0) / 20.0)


def serving_registry(view: RolloutView | None = None, *, failing: Iterable[str] = (), broken: Iterable[str] = (),
                     versions: int = 3, model: str = MODEL) -> MemoryRegistry:
    """The in-memory registry with versions 1..`versions` of `model`, each a FakeScorer (raising when
    `failing`; not servable at all when `broken`), and the aliases and weight of `view` published."""
    registry = MemoryRegistry()
    registry.ensure_registered_model(model, "test")
    failing, broken = set(failing), set(broken)
    for number in range(1, versions + 1):
        version = str(number)
        program = None if version in broken else FakeScorer(version, fail=version in failing)
        registry.register_version(model, f"s3://models/{version}", tags={names.TAG_ROLLOUT_WEIGHT: 0},
                                  program=program)
    publish(registry, view or RolloutView(), model)
    return registry


def publish(registry: MemoryRegistry, view: RolloutView, model: str = MODEL) -> None:
    """Write `view` as the rollout controller does: the aliases and the challenger's weight tag."""
    if view.challenger is not None:
        registry.tag_version(model, view.challenger, {names.TAG_ROLLOUT_WEIGHT: view.weight})
    for alias, version in ((names.ALIAS_CHAMPION, view.champion), (names.ALIAS_CHALLENGER, view.challenger)):
        if version is None:
            registry.delete_alias(model, alias)
        else:
            registry.set_alias(model, alias, version)


def watcher_of(registry: RegistryPort, model: str = MODEL, interval_s: float = 3600,
               loads: list[str] | None = None) -> RegistryWatcher:
    """The router's watcher on `registry`, as `ferry.serving.app.make_service` wires it; `loads` records
    every version it loads."""
    def load(version: str) -> Any:
        if loads is not None:
            loads.append(version)
        return registry.load_pytorch_version(model, version)

    return RegistryWatcher(model, lambda: registry.rollout_view(model), load, interval_s)


@dataclass
class RecordingRecorder:
    requests: list[tuple[str, str, str, int]] = field(default_factory=list)
    latencies: list[tuple[str, str, float]] = field(default_factory=list)
    scored: list[tuple[str, str, int, int]] = field(default_factory=list)

    def request(self, outcome: str, version: str, variant: str, count: int = 1) -> None:
        self.requests.append((outcome, version, variant, count))

    def latency(self, version: str, variant: str, ms: float) -> None:
        self.latencies.append((version, variant, ms))

    def scores(self, version: str, variant: str, scores: np.ndarray, positives: int) -> None:
        self.scored.append((version, variant, len(scores), positives))

    def total(self, outcome: str, variant: str | None = None) -> int:
        return sum(n for o, _, v, n in self.requests if o == outcome and (variant is None or v == variant))


def make_service(registry: RegistryPort, model: str = MODEL) -> ScoringService:
    watcher = watcher_of(registry, model)
    watcher.refresh()
    return ScoringService(model, WorkloadView.of(FraudDetectionWorkload()), watcher, RecordingRecorder(), "fp")


def transaction(customer_id: int = 1, amount: float = 50.0, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: 0.5 if "risk" in name or "during" in name else 3.0
                           for name in FraudDetectionWorkload.feature_names}
    row.update(customer_id=customer_id, tx_amount=amount)
    row.update(overrides)
    return row


def transactions(count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [transaction(customer_id=rng.randrange(10**6), amount=rng.uniform(0, 300)) for _ in range(count)]
