"""Turn Prometheus series into the policy's Observation for champion vs challenger since one instant.

Every windowed figure is an exact counter difference, `x - (x @ since or x * 0)`: the value now minus
the value the last scrape before `since` held (0 for a series born after it), summed after the
difference. Unlike `increase(x[w])` it does not extrapolate to the window's edges, so a series one scrape
old counts fully and every score bucket is scaled by the same factor (per-bucket extrapolation made the
PSI of two identical models read up to 0.7), and the window starts where the weight step started, so a
step is judged on its own traffic. A replica restart resets its counters; its negative difference is
clamped to 0 (what it served before the restart is lost, never counted twice). `since` is the
controller's wall clock read against Prometheus' (`@` takes unix time): the two must agree to within a
scrape interval, which NTP-synchronised nodes do.
"""

from __future__ import annotations

import math
from collections import defaultdict

from ferry.adapters.prometheus import Prometheus
from ferry.contract import metrics as m
from ferry.rollout.policy import Observation, VariantStats

OK, SERVER_ERROR = m.OUTCOME_OK, m.OUTCOME_SERVER_ERROR


def _selector(model: str, versions: tuple[str, str]) -> str:
    return f'model="{model}",version=~"{versions[0]}|{versions[1]}"'


def since_start(series: str, since_unix: float) -> str:
    """PromQL for how much each series of a counter grew since `since_unix`, exactly."""
    return f"clamp_min({series} - ({series} @ {since_unix:.3f} or {series} * 0), 0)"


def requests_by_version(prom: Prometheus, model: str, versions: tuple[str, str],
                        since_unix: float) -> dict[str, dict[str, float]]:
    series = f"{m.SERVING_REQUESTS.series}{{{_selector(model, versions)}}}"
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for labels, value in prom.vector(f"sum by (version, outcome) ({since_start(series, since_unix)})"):
        if not math.isnan(value):
            counts[labels.get("version", "")][labels.get("outcome", "")] += value
    return counts


def p99_by_version(prom: Prometheus, model: str, versions: tuple[str, str], since_unix: float) -> dict[str, float]:
    series = f"{m.SERVING_LATENCY.bucket}{{{_selector(model, versions)}}}"
    query = f"histogram_quantile(0.99, sum by (le, version) ({since_start(series, since_unix)}))"
    return {labels.get("version", ""): value for labels, value in prom.vector(query) if not math.isnan(value)}


def score_histograms(prom: Prometheus, model: str, versions: tuple[str, str],
                     since_unix: float) -> dict[str, tuple[float, ...]]:
    series = f"{m.SERVING_SCORE_BUCKETS.series}{{{_selector(model, versions)}}}"
    cumulative: dict[str, dict[float, float]] = defaultdict(dict)
    for labels, value in prom.vector(f"sum by (le, version) ({since_start(series, since_unix)})"):
        cumulative[labels.get("version", "")][float(labels["le"])] = value
    every_le = sorted({le for buckets in cumulative.values() for le in buckets})
    return {version: _per_bin(buckets, every_le) for version, buckets in cumulative.items()}


def _per_bin(cumulative: dict[float, float], every_le: list[float]) -> tuple[float, ...]:
    """Per-bin counts over the same `le` for every version. The router only creates a bucket's series with
    its first row (ferry.serving.metrics), so a bucket missing for one version while another has it holds 0."""
    ordered = [cumulative.get(le, 0.0) for le in every_le]
    return tuple(max(b - a, 0.0) for a, b in zip([0.0, *ordered], ordered, strict=False))


def observe(prom: Prometheus, model: str, champion: str, challenger: str, since_unix: float) -> Observation:
    versions = (champion, challenger)
    counts = requests_by_version(prom, model, versions, since_unix)
    p99 = p99_by_version(prom, model, versions, since_unix)
    hists = score_histograms(prom, model, versions, since_unix)

    def stats(version: str) -> VariantStats:
        by_outcome = counts.get(version, {})
        served = by_outcome.get(OK, 0.0) + by_outcome.get(SERVER_ERROR, 0.0)
        return VariantStats(served, by_outcome.get(SERVER_ERROR, 0.0), p99.get(version), hists.get(version, ()))

    champion_stats, challenger_stats = stats(champion), stats(challenger)
    if len(champion_stats.scores) != len(challenger_stats.scores):  # one side has no histogram yet
        champion_stats = VariantStats(champion_stats.requests, champion_stats.errors, champion_stats.p99_latency_ms)
        challenger_stats = VariantStats(challenger_stats.requests, challenger_stats.errors,
                                        challenger_stats.p99_latency_ms)
    return Observation(champion_stats, challenger_stats)
