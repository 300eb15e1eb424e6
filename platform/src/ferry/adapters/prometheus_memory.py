"""`PrometheusQuery` in memory: counter samples a test records, answered with Prometheus' meaning.

`record(metric, labels, value, at)` adds one scraped sample. An answer is computed at `now()`, as an
instant query: a series' current value is its last sample at or before now, within Prometheus' default
5-minute lookback (an older series is stale: absent); its value at `since` likewise. Growth and
quantiles follow the port's definitions (ferry.adapters.prometheus_port) and `histogram_quantile`'s
rules: buckets sorted by `le`, a group without a `+Inf` bucket or without observations is NaN, a rank
in the `+Inf` bucket answers the highest finite bound, otherwise linear interpolation within the bucket.
`unavailable` makes every query raise PrometheusUnavailable, as the HTTP client does when it gets no answer.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

from ferry.adapters.prometheus_port import PrometheusQuery, PrometheusUnavailable, Sample, Selector

LOOKBACK_S = 300.0  # Prometheus' default --query.lookback-delta
Labels = tuple[tuple[str, str], ...]


class MemoryPrometheus(PrometheusQuery):
    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now
        self.unavailable = False
        self._series: dict[tuple[str, Labels], tuple[list[float], list[float]]] = {}  # (times, values), by time

    def record(self, metric: str, labels: Mapping[str, str], value: float, at: float) -> None:
        times, values = self._series.setdefault((metric, tuple(sorted(labels.items()))), ([], []))
        index = bisect.bisect_right(times, at)
        times.insert(index, at)
        values.insert(index, value)

    def growth_since(self, series: Selector, by: tuple[str, ...], since_unix: float) -> list[Sample]:
        return [Sample(dict(key), value) for key, value in self._grown(series, by, since_unix).items()]

    def _grown(self, series: Selector, by: tuple[str, ...], since_unix: float) -> dict[Labels, float]:
        if self.unavailable:
            raise PrometheusUnavailable("Prometheus (in memory) is unavailable")
        now = self.now()
        sums: dict[Labels, float] = defaultdict(float)
        for (metric, labels), (times, values) in self._series.items():
            found = dict(labels)
            if metric != series.metric or not series.matches(found):
                continue
            current = _value_at(times, values, now)
            if current is None:
                continue
            before = _value_at(times, values, since_unix) or 0.0
            sums[tuple((name, found.get(name, "")) for name in by)] += max(current - before, 0.0)
        return dict(sums)


def _value_at(times: list[float], values: list[float], at: float) -> float | None:
    """The last sample at or before `at` within the lookback; None when there is none (stale or unborn)."""
    index = bisect.bisect_right(times, at) - 1
    return values[index] if index >= 0 and at - times[index] <= LOOKBACK_S else None
