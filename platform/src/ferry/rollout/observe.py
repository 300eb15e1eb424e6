"""Turn the canary's metrics into the policy's Observation for champion vs challenger since one instant.

Every windowed figure is a counter's exact growth since `since` (what the rollout step's data is: the
traffic since its weight step began), asked of the `PrometheusQuery` port, whose doc defines it: nothing
is extrapolated, so a series one scrape old counts fully and every score bucket is scaled by the same
factor, and a replica restart loses what it served before, never counts it twice. The p99 is computed from the
same latency buckets the policy counts slow requests in, so the two always describe one scrape.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from itertools import accumulate

from ferry.adapters.prometheus_port import BUCKET_LABEL, PrometheusQuery, Selector, bucket_quantile
from ferry.contract import metrics as m
from ferry.rollout.policy import Observation, VariantStats

OK, SERVER_ERROR = m.OUTCOME_OK, m.OUTCOME_SERVER_ERROR


def _selector(series: str, model: str, versions: tuple[str, str]) -> Selector:
    return Selector(series, {"model": model, "version": versions})


def requests_by_version(prom: PrometheusQuery, model: str, versions: tuple[str, str],
                        since_unix: float) -> dict[str, dict[str, float]]:
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    series = _selector(m.SERVING_REQUESTS.series, model, versions)
    for sample in prom.growth_since(series, ("version", "outcome"), since_unix):
        if not math.isnan(sample.value):
            counts[sample.labels.get("version", "")][sample.labels.get("outcome", "")] += sample.value
    return counts


def latency_histograms(prom: PrometheusQuery, model: str, versions: tuple[str, str],
                       since_unix: float) -> dict[str, tuple[tuple[float, float], ...]]:
    """Each version's cumulative latency buckets (le, requests) since the start, le ascending (`+Inf` last), as
    `histogram_quantile` reads them: series of one bound (`100` and `100.0`) added, a bucket below the one under
    it (a replica restart's reset, clamped per series) raised to it."""
    cumulative: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    series = _selector(m.SERVING_LATENCY.bucket, model, versions)
    for sample in prom.growth_since(series, (BUCKET_LABEL, "version"), since_unix):
        if not math.isnan(sample.value):
            cumulative[sample.labels.get("version", "")][float(sample.labels[BUCKET_LABEL])] += sample.value
    return {version: _repaired(buckets) for version, buckets in cumulative.items()}


def _repaired(buckets: dict[float, float]) -> tuple[tuple[float, float], ...]:
    bounds = sorted(buckets)
    return tuple(zip(bounds, accumulate((buckets[le] for le in bounds), max), strict=True))


def p99_of(latency: tuple[tuple[float, float], ...]) -> float | None:
    """The p99 (ms) `histogram_quantile` gives for these buckets; None without observations."""
    found = bucket_quantile(0.99, dict(latency)) if latency else math.nan
    return None if math.isnan(found) else found


def score_histograms(prom: PrometheusQuery, model: str, versions: tuple[str, str],
                     since_unix: float) -> dict[str, tuple[float, ...]]:
    cumulative: dict[str, dict[float, float]] = defaultdict(dict)
    series = _selector(m.SERVING_SCORE_BUCKETS.series, model, versions)
    for sample in prom.growth_since(series, (BUCKET_LABEL, "version"), since_unix):
        cumulative[sample.labels.get("version", "")][float(sample.labels[BUCKET_LABEL])] = sample.value
    every_le = sorted({le for buckets in cumulative.values() for le in buckets})
    return {version: _per_bin(buckets, every_le) for version, buckets in cumulative.items()}


def _per_bin(cumulative: dict[float, float], every_le: list[float]) -> tuple[float, ...]:
    """Per-bin counts over the same `le` for every version. The router only creates a bucket's series with
    its first row (ferry.serving.metrics), so a bucket missing for one version while another has it holds 0."""
    ordered = [cumulative.get(le, 0.0) for le in every_le]
    return tuple(max(b - a, 0.0) for a, b in zip([0.0, *ordered], ordered, strict=False))


def observe(prom: PrometheusQuery, model: str, champion: str, challenger: str, since_unix: float) -> Observation:
    versions = (champion, challenger)
    counts = requests_by_version(prom, model, versions, since_unix)
    hists = score_histograms(prom, model, versions, since_unix)
    latency = latency_histograms(prom, model, versions, since_unix)

    def stats(version: str) -> VariantStats:
        by_outcome = counts.get(version, {})
        served = by_outcome.get(OK, 0.0) + by_outcome.get(SERVER_ERROR, 0.0)
        buckets = latency.get(version, ())
        return VariantStats(served, by_outcome.get(SERVER_ERROR, 0.0), p99_of(buckets), hists.get(version, ()),
                            buckets)

    champion_stats, challenger_stats = stats(champion), stats(challenger)
    if len(champion_stats.scores) != len(challenger_stats.scores):  # one side has no histogram yet
        champion_stats, challenger_stats = (replace(s, scores=()) for s in (champion_stats, challenger_stats))
    return Observation(champion_stats, challenger_stats)
