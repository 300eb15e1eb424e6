"""Fakes for serving unit tests: a registry view, torch 'models' per version, a recording metrics sink."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ferry.adapters.registry import RolloutView
from ferry.serving.service import ScoringService, WorkloadView
from ferry.serving.watcher import RegistryWatcher
from fraud_detection.workload import FraudDetectionWorkload


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


@dataclass
class FakeRegistry:
    view: RolloutView = field(default_factory=RolloutView)
    down: bool = False
    broken: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    loads: list[str] = field(default_factory=list)
    models: dict[str, FakeScorer] = field(default_factory=dict)

    def read(self) -> RolloutView:
        if self.down:
            raise ConnectionError("registry down")
        return self.view

    def load(self, version: str) -> FakeScorer:
        self.loads.append(version)
        if version in self.broken:
            raise ValueError(f"version {version} is not a pt2 model")
        self.models[version] = FakeScorer(version, fail=version in self.failing)
        return self.models[version]


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


def make_service(registry: FakeRegistry, model: str = "fraud-detector") -> ScoringService:
    watcher = RegistryWatcher(model, registry.read, registry.load, interval_s=3600)
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
