"""Benchmark: what live drift monitoring adds to the router's request path.

Not a test: it prints figures (docs/benchmarks/monitoring.md records them). In-process, no Ray: the router's
`ScoringService` with a real registered-style model (the fraud workload's FraudMLP behind its Scorer, scored
through torch as the router does) scores the same batches with and without a `DriftMonitor` attached, in
alternating rounds so both see the same machine state. The monitor's window is open (reference built from
simulated training rows), so every batch is binned. Reported: median µs per batch for batch sizes 1, 32, 256,
and the ratio with/without (the baseline measured in the same run). Also the cost of one PSI publish.

    .venv/bin/python benchmarks/bench_drift_overhead.py [--rounds 30] [--batches 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

from ferry.adapters.registry_port import RolloutView, VersionFacts
from ferry.serving.drift import DriftMonitor
from ferry.serving.metrics import NullRecorder
from ferry.serving.service import ScoringService, WorkloadView
from ferry.serving.watcher import RegistryWatcher
from ferry.stats.reference import build_reference
from fraud_detection.model import FraudMLP, Scorer
from fraud_detection.workload import FraudDetectionWorkload


class NoGauges:
    def psi(self, feature: str, value: float) -> None:
        return None

    def trained_at(self, seconds: float) -> None:
        return None


def setup(rows: np.ndarray) -> tuple[ScoringService, ScoringService, DriftMonitor]:
    workload = WorkloadView.of(FraudDetectionWorkload())
    torch.manual_seed(0)
    net = FraudMLP(len(workload.feature_names), hidden=64, dropout=0.0)
    net.set_scaling(rows)
    scorer = Scorer(net).eval()
    watcher = RegistryWatcher("bench", lambda: RolloutView(champion="1"), lambda version: scorer, 3600)
    watcher.refresh()
    with torch.no_grad():
        scores = scorer(torch.from_numpy(rows)).numpy().reshape(-1)
    reference = build_reference(rows, workload.feature_names, scores)
    monitor = DriftMonitor("bench", workload.feature_names, 3600, NoGauges(), lambda: "1",
                           lambda version: VersionFacts(reference, None))
    monitor.tick()
    plain = ScoringService("bench", workload, watcher, NullRecorder())
    drifting = ScoringService("bench", workload, watcher, NullRecorder(), drift=monitor)
    return plain, drifting, monitor


def per_batch_us(service: ScoringService, batches: list[list[Any]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        service.score_each(batch)
    return (time.perf_counter() - started) / len(batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    workload = FraudDetectionWorkload()
    rows = np.abs(rng.normal(20, 10, size=(5000, len(workload.feature_names)))).astype(np.float32)
    rows[:, 1:3] = rng.integers(0, 2, size=(5000, 2))
    rows[:, 10:] = np.clip(rows[:, 10:] / 100, 0, 1)
    plain, drifting, monitor = setup(rows)
    names = workload.feature_names
    requests = [workload.request_model.model_validate({"customer_id": i, **dict(zip(names, map(float, row),
                                                                                   strict=True))})
                for i, row in enumerate(rows[:1000])]
    print(f"torch threads 1; {args.rounds} alternating rounds of {args.batches} batches")
    for size in (1, 32, 256):
        batches = [requests[(i * size) % 700:(i * size) % 700 + size] for i in range(args.batches)]
        base, with_drift = [], []
        for _ in range(args.rounds):
            base.append(per_batch_us(plain, batches))
            with_drift.append(per_batch_us(drifting, batches))
        b, d = statistics.median(base), statistics.median(with_drift)
        print(f"batch {size:2d}: {b:8.1f} µs without drift, {d:8.1f} µs with drift: ratio {d / b:.3f} "
              f"(+{d - b:.1f} µs per batch)")
    started = time.perf_counter()
    for _ in range(100):
        monitor.tick()
    print(f"one PSI publish (16 histograms, background thread): {(time.perf_counter() - started) / 100 * 1e6:.0f} µs")


if __name__ == "__main__":
    main()
