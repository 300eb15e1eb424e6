"""The observer: champion vs challenger from counters' exact growth since the step's start, per variant,
read from the in-memory Prometheus (the PromQL the real one gets: tests/unit/adapters/test_prometheus.py)."""

from __future__ import annotations

import math

import pytest

from ferry.adapters.prometheus_memory import MemoryPrometheus
from ferry.contract import metrics as m
from ferry.rollout.observe import observe

SINCE, NOW = 1_700_000_000.0, 1_700_000_060.0


def prometheus() -> MemoryPrometheus:
    return MemoryPrometheus(now=lambda: NOW)


def requests(prom: MemoryPrometheus, version: str, outcome: str, before: float | None, now: float,
             model: str = "m", replica: str = "a") -> None:
    labels = {"model": model, "version": version, "outcome": outcome, "replica": replica}
    if before is not None:
        prom.record(m.SERVING_REQUESTS.series, labels, before, SINCE - 10)
    prom.record(m.SERVING_REQUESTS.series, labels, now, NOW - 5)


def scores(prom: MemoryPrometheus, version: str, counts: dict[str, float]) -> None:
    for le, count in counts.items():
        prom.record(m.SERVING_SCORE_BUCKETS.series, {"model": "m", "version": version, "le": le}, count, NOW - 5)


def test_counts_are_exact_growth_since_the_step_start() -> None:
    prom = prometheus()
    requests(prom, "1", "ok", 100.0, 1000.0)
    requests(prom, "1", "ok", 500.0, 20.0, replica="b")  # restarted: its reset loses counts, never subtracts
    requests(prom, "2", "ok", 10.0, 300.0)
    requests(prom, "2", "server_error", None, 10.0)  # born after the step started: counts fully
    requests(prom, "2", "client_error", None, 4.0)
    requests(prom, "3", "ok", None, 50.0)  # neither variant
    requests(prom, "1", "ok", None, 70.0, model="other")
    for le, before, now in (("10", 0.0, 0.0), ("20", 5.0, 105.0), ("+Inf", 5.0, 105.0)):
        prom.record(m.SERVING_LATENCY.bucket, {"model": "m", "version": "1", "le": le}, before, SINCE - 10)
        prom.record(m.SERVING_LATENCY.bucket, {"model": "m", "version": "1", "le": le}, now, NOW - 5)
        for at in (SINCE - 10, NOW - 5):  # version 2 observed nothing since the start
            prom.record(m.SERVING_LATENCY.bucket, {"model": "m", "version": "2", "le": le}, before, at)
    scores(prom, "1", {"0.5": 240.0, "1.0": 285.0, "+Inf": 300.0})
    scores(prom, "2", {"0.5": 80.0, "1.0": 95.0, "+Inf": 100.0})
    obs = observe(prom, "m", "1", "2", SINCE)
    assert (obs.champion.requests, obs.champion.errors) == (900.0, 0.0)
    assert (obs.challenger.requests, obs.challenger.errors) == (300.0, 10.0)  # client errors are not served
    assert obs.champion.p99_latency_ms == pytest.approx(19.9)  # 10 + 10 * 99/100 within the (10, 20] bucket
    assert obs.challenger.p99_latency_ms is None  # no observation since the start: NaN, dropped
    assert obs.champion.latency == ((10.0, 0.0), (20.0, 100.0), (math.inf, 100.0))  # what the p99 check counts
    assert obs.challenger.latency == ((10.0, 0.0), (20.0, 0.0), (math.inf, 0.0))
    assert obs.champion.scores == (240.0, 45.0, 15.0) and obs.challenger.scores == (80.0, 15.0, 5.0)
    assert obs.score_psi == 0.0  # same shape, different totals


def test_latency_buckets_are_read_as_histogram_quantile_reads_them() -> None:
    # two spellings of one bound (exporters differ) add up; a bucket under the one below it (one replica's reset
    # clamped on its own) is raised to it; the p99 comes from these same buckets
    prom = prometheus()
    for le, count, replica in (("50", 90.0, "a"), ("100", 95.0, "a"), ("100.0", 3.0, "b"), ("150", 97.0, "a"),
                               ("150", 1.0, "b"), ("+Inf", 100.0, "a"), ("+Inf", 4.0, "b")):
        prom.record(m.SERVING_LATENCY.bucket, {"model": "m", "version": "2", "le": le, "replica": replica}, count,
                    NOW - 5)
    obs = observe(prom, "m", "1", "2", SINCE)
    assert obs.challenger.latency == ((50.0, 90.0), (100.0, 98.0), (150.0, 98.0), (math.inf, 104.0))
    assert obs.challenger.p99_latency_ms == 150.0  # rank 102.96 falls in +Inf: the highest finite bound
    assert obs.champion.latency == () and obs.champion.p99_latency_ms is None


def test_a_missing_low_bucket_counts_as_zero_so_both_variants_share_bins() -> None:
    # the router creates a score bucket's series with its first row: version 2 never scored <= 0.5
    prom = prometheus()
    scores(prom, "1", {"0.5": 50.0, "1.0": 90.0, "+Inf": 100.0})
    scores(prom, "2", {"1.0": 60.0, "+Inf": 100.0})
    obs = observe(prom, "m", "1", "2", SINCE)
    assert obs.champion.scores == (50.0, 40.0, 10.0)
    assert obs.challenger.scores == (0.0, 60.0, 40.0)


def test_one_side_without_a_histogram_compares_no_scores() -> None:
    prom = prometheus()
    scores(prom, "1", {"0.5": 50.0, "+Inf": 100.0})
    obs = observe(prom, "m", "1", "2", SINCE)
    assert obs.champion.scores == () and obs.challenger.scores == ()
