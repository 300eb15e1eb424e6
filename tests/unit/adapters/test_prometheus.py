"""The Prometheus query port's two implementations: the PromQL the HTTP one sends (exact differences,
never `increase()`), its errors, and the in-memory one's lookback and `histogram_quantile` arithmetic."""

from __future__ import annotations

import math

import httpx
import pytest

from ferry.adapters.prometheus import Prometheus, since_start
from ferry.adapters.prometheus_memory import MemoryPrometheus
from ferry.adapters.prometheus_port import PrometheusUnavailable, Sample, Selector, bucket_quantile

SERIES = Selector("ray_ferry_serving_requests_total", {"model": "m", "version": ("1", "2")})


def answering(queries: list[str], result: list[dict[str, object]], status: int = 200) -> Prometheus:
    def handle(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.params["query"])
        return httpx.Response(status, json={"status": "success", "data": {"resultType": "vector", "result": result}})

    return Prometheus("http://prometheus:9090/", transport=httpx.MockTransport(handle))


def test_growth_is_an_exact_difference_summed_after_it() -> None:
    assert since_start('x{a="b"}', 1700000000.25) == (
        'clamp_min(x{a="b"} - (x{a="b"} @ 1700000000.250 or x{a="b"} * 0), 0)')
    queries: list[str] = []
    prom = answering(queries, [{"metric": {"version": "1", "outcome": "ok"}, "value": [1.7e9, "900"]}])
    assert prom.growth_since(SERIES, ("version", "outcome"), 1700000000.0) == [
        Sample({"version": "1", "outcome": "ok"}, 900.0)]
    series = 'ray_ferry_serving_requests_total{model="m",version=~"1|2"}'
    assert queries == [
        f"sum by (version, outcome) (clamp_min({series} - ({series} @ 1700000000.000 or {series} * 0), 0))"]


def test_a_histogram_groups_by_bucket_and_escapes_label_values() -> None:
    queries: list[str] = []
    prom = answering(queries, [{"metric": {"version": "1", "le": "100"}, "value": [1.7e9, "7"]}])
    buckets = Selector("lat_bucket", {"model": 'say "hi"', "version": ("1.0", "2")})
    assert prom.growth_since(buckets, ("le", "version"), 5.0) == [Sample({"version": "1", "le": "100"}, 7.0)]
    series = r'lat_bucket{model="say \"hi\"",version=~"1\\.0|2"}'
    assert queries == [f"sum by (le, version) ({since_start(series, 5.0)})"]


@pytest.mark.parametrize("status", [400, 503])
def test_an_error_answer_is_unavailable(status: int) -> None:
    with pytest.raises(PrometheusUnavailable, match="did not answer"):
        answering([], [], status).growth_since(SERIES, ("version",), 0.0)


def test_no_answer_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    prom = Prometheus("http://prometheus:9090", transport=httpx.MockTransport(refuse))
    with pytest.raises(PrometheusUnavailable, match="connection refused"):
        prom.vector("up")


def test_memory_series_go_stale_after_the_lookback_and_can_be_down() -> None:
    now = [1000.0]
    prom = MemoryPrometheus(now=lambda: now[0])
    prom.record("c", {"model": "m", "version": "1"}, 5.0, 990.0)
    prom.record("c", {"model": "m", "version": "7"}, 5.0, 990.0)
    assert prom.growth_since(Selector("c", {"version": ("1", "2")}), ("version",), 900.0) == [
        Sample({"version": "1"}, 5.0)]
    now[0] = 990.0 + 301
    assert prom.growth_since(Selector("c"), ("version",), 900.0) == []
    prom.unavailable = True
    with pytest.raises(PrometheusUnavailable):
        prom.growth_since(Selector("c"), (), 0.0)


@pytest.mark.parametrize(("quantile", "counts", "expected"), [
    (0.5, {1.0: 10.0, 2.0: 20.0, math.inf: 20.0}, 1.0),  # rank 10 at the top of the first bucket
    (0.25, {1.0: 10.0, 2.0: 20.0, math.inf: 20.0}, 0.5),  # the first bucket starts at 0
    (0.75, {1.0: 10.0, 2.0: 20.0, math.inf: 20.0}, 1.5),
    (0.99, {1.0: 10.0, 2.0: 10.0, math.inf: 20.0}, 2.0),  # in +Inf: the highest finite bound
    (0.5, {1.0: 10.0, 2.0: 5.0, math.inf: 20.0}, 1.0),  # non-monotonic buckets are repaired
    (0.5, {1.0: 0.0, math.inf: 0.0}, math.nan),  # no observation
    (0.5, {1.0: 1.0, 2.0: 2.0}, math.nan),  # no +Inf bucket
    (1.5, {1.0: 1.0, math.inf: 2.0}, math.inf),
])
def test_bucket_quantile_is_histogram_quantile(quantile: float, counts: dict[float, float], expected: float) -> None:
    found = bucket_quantile(quantile, counts)
    assert math.isnan(found) if math.isnan(expected) else found == expected
