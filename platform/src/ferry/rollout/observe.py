"""Turn Prometheus series into the policy's Observation for champion vs challenger over one window."""

from __future__ import annotations

import math
from collections import defaultdict

from ferry.adapters.prometheus import Prometheus
from ferry.rollout.policy import Observation, VariantStats, psi

PREFIX = "ray_ferry_serving_"  # Ray's exporter prefixes application metrics with `ray_`


def _selector(model: str, versions: tuple[str, str]) -> str:
    return f'model="{model}",version=~"{versions[0]}|{versions[1]}"'


def requests_by_version(prom: Prometheus, model: str, versions: tuple[str, str], window: str) -> dict[str, dict]:
    query = (f"sum by (version, outcome) (increase({PREFIX}requests_total{{{_selector(model, versions)}}}"
             f"[{window}]))")
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for labels, value in prom.vector(query):
        if not math.isnan(value):
            counts[labels.get("version", "")][labels.get("outcome", "")] += value
    return counts


def p99_by_version(prom: Prometheus, model: str, versions: tuple[str, str], window: str) -> dict[str, float]:
    query = (f"histogram_quantile(0.99, sum by (le, version) (rate({PREFIX}latency_ms_bucket"
             f"{{{_selector(model, versions)}}}[{window}])))")
    return {labels.get("version", ""): value for labels, value in prom.vector(query) if not math.isnan(value)}


def score_histograms(prom: Prometheus, model: str, versions: tuple[str, str], window: str) -> dict[str, list[float]]:
    query = (f"sum by (le, version) (increase({PREFIX}score_bucket{{{_selector(model, versions)}}}[{window}]))")
    cumulative: dict[str, dict[float, float]] = defaultdict(dict)
    for labels, value in prom.vector(query):
        cumulative[labels.get("version", "")][float(labels["le"])] = value
    return {version: _per_bin(buckets) for version, buckets in cumulative.items()}


def _per_bin(cumulative: dict[float, float]) -> list[float]:
    ordered = [cumulative[le] for le in sorted(cumulative)]
    return [max(b - a, 0.0) for a, b in zip([0.0, *ordered], ordered, strict=False)]


def observe(prom: Prometheus, model: str, champion: str, challenger: str, window: str) -> Observation:
    versions = (champion, challenger)
    counts = requests_by_version(prom, model, versions, window)
    p99 = p99_by_version(prom, model, versions, window)
    hists = score_histograms(prom, model, versions, window)

    def stats(version: str) -> VariantStats:
        by_outcome = counts.get(version, {})
        served = by_outcome.get("ok", 0.0) + by_outcome.get("server_error", 0.0)
        return VariantStats(served, by_outcome.get("server_error", 0.0), p99.get(version))

    score_psi = None
    if champion in hists and challenger in hists and len(hists[champion]) == len(hists[challenger]):
        score_psi = psi(hists[champion], hists[challenger])
    return Observation(stats(champion), stats(challenger), score_psi)
