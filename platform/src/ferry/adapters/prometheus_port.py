"""The metrics the canary is judged on, as ferry asks for them: how much counters grew since an instant.

`PrometheusQuery` is the seam between the rollout (`ferry.rollout.observe`, the controller) and the
metrics store. It speaks ferry's types (a `Selector`, `Sample`s), not PromQL, so two implementations can
obey one meaning:

- `ferry.adapters.prometheus.Prometheus`: Prometheus' HTTP API, the queries written in PromQL;
- `ferry.adapters.prometheus_memory.MemoryPrometheus`: counter samples in memory (unit tests).

The meaning of "growth since t", exactly: for each series, its value now minus the value of its last
sample at or before `t` (0 for a series born after `t`), clamped at 0 (a counter reset loses what came
before it, never counts it twice), then summed over the series that share the `by` labels. Unlike
Prometheus' `increase()` nothing is extrapolated to the window's edges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ferry.contract.errors import FerryError

BUCKET_LABEL = "le"  # a histogram bucket's upper bound, as Prometheus names it


class PrometheusUnavailable(FerryError):
    """The metrics store did not answer (or answered an error): the check that asked is inconclusive."""


@dataclass(frozen=True)
class Selector:
    """The series of one metric whose labels match: a string label must equal, a tuple must be one of."""

    metric: str
    labels: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(name, "") in (wanted if isinstance(wanted, tuple) else (wanted,))
                   for name, wanted in self.labels.items())


@dataclass(frozen=True)
class Sample:
    """One series of an instant answer: the labels kept by the query, and its value."""

    labels: Mapping[str, str]
    value: float


class PrometheusQuery(Protocol):
    def growth_since(self, series: Selector, by: tuple[str, ...], since_unix: float) -> list[Sample]:
        """How much the matching counters grew since `since_unix` (see the module's doc), summed by `by`."""
        ...


def bucket_quantile(quantile: float, counts: Mapping[float, float]) -> float:
    """`histogram_quantile` over cumulative counts by upper bound (Prometheus' algorithm, classic buckets): the
    rollout reads a histogram's buckets with `growth_since` and takes its quantiles here, from the same counts."""
    if quantile < 0 or quantile > 1:
        return -math.inf if quantile < 0 else math.inf
    bounds = sorted(counts)
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return math.nan
    cumulative = [counts[bounds[0]]]
    for bound in bounds[1:]:
        cumulative.append(max(cumulative[-1], counts[bound]))  # Prometheus repairs non-monotonic buckets
    if cumulative[-1] <= 0:
        return math.nan
    rank = quantile * cumulative[-1]
    index = next((i for i in range(len(bounds) - 1) if cumulative[i] >= rank), len(bounds) - 1)
    if index == len(bounds) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start, below = (bounds[index - 1], cumulative[index - 1]) if index > 0 else (0.0, 0.0)
    inside = cumulative[index] - below
    return start + (bounds[index] - start) * (rank - below) / inside if inside > 0 else math.nan
