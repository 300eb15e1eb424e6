"""Serving metrics, recorded through `ray.serve.metrics` so Ray exports them on its metrics endpoint.

Ray adds the `deployment`, `replica` and `application` labels itself; ferry adds `model`, `version` and
`variant` (champion | challenger | none, the latter for requests rejected before routing), and
`outcome` (ok | client_error | server_error) on the request counter. Ray's exporter prefixes every
application metric with `ray_`, so Prometheus sees:

    ray_ferry_serving_requests_total{model,version,variant,outcome}          counter, one per scored row
                                                                             (a rejected request counts once)
    ray_ferry_serving_latency_ms_bucket|_sum|_count{model,version,variant}  histogram, per HTTP request
    ray_ferry_serving_score_bucket|_sum|_count{model,version,variant}       histogram of scores in [0, 1]
    ray_ferry_serving_predicted_positive_total{model,version,variant}       counter of decision == true

The positive rate is `rate(..._predicted_positive_total) / rate(..._requests_total{outcome="ok"})`.
The canary controller compares these per variant; the score histogram's fixed buckets are what its
PSI is computed over, so they must not change between versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

REQUESTS = "ferry_serving_requests_total"
LATENCY = "ferry_serving_latency_ms"
SCORE = "ferry_serving_score"
POSITIVES = "ferry_serving_predicted_positive_total"
EXPORT_PREFIX = "ray_"

LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000,
                         5000, 10000]
SCORE_BOUNDARIES = [round(i / 20, 2) for i in range(1, 20)]  # 0.05 … 0.95; +Inf catches 1.0

OK, CLIENT_ERROR, SERVER_ERROR = "ok", "client_error", "server_error"
UNROUTED = "none"


class Recorder(Protocol):
    def request(self, outcome: str, version: str, variant: str, count: int = 1) -> None: ...

    def latency(self, version: str, variant: str, ms: float) -> None: ...

    def scores(self, version: str, variant: str, scores: Sequence[float], positives: int) -> None: ...


class NullRecorder:
    """For tests and tools that run the scoring service outside Ray."""

    def request(self, outcome: str, version: str, variant: str, count: int = 1) -> None:
        return None

    def latency(self, version: str, variant: str, ms: float) -> None:
        return None

    def scores(self, version: str, variant: str, scores: Sequence[float], positives: int) -> None:
        return None


class RayRecorder:
    """Created inside a replica: Ray metrics need the replica's core worker to report through."""

    def __init__(self, model: str) -> None:
        from ray.serve import metrics

        keys: Any = ("model", "version", "variant")  # Ray's stubs type tag_keys as a 1-tuple
        self.model = model
        self._requests = metrics.Counter(REQUESTS, "Scored rows and rejected requests by outcome.",
                                         tag_keys=(*keys, "outcome"))
        self._latency = metrics.Histogram(LATENCY, "Router time per HTTP request (ms).",
                                          boundaries=LATENCY_BOUNDARIES_MS, tag_keys=keys)
        self._score = metrics.Histogram(SCORE, "Model scores.", boundaries=SCORE_BOUNDARIES, tag_keys=keys)
        self._positives = metrics.Counter(POSITIVES, "Rows whose decision was positive.", tag_keys=keys)

    def _tags(self, version: str, variant: str) -> dict[str, str]:
        return {"model": self.model, "version": version, "variant": variant}

    def request(self, outcome: str, version: str, variant: str, count: int = 1) -> None:
        self._requests.inc(count, tags={**self._tags(version, variant), "outcome": outcome})

    def latency(self, version: str, variant: str, ms: float) -> None:
        self._latency.observe(ms, tags=self._tags(version, variant))

    def scores(self, version: str, variant: str, scores: Sequence[float], positives: int) -> None:
        """One histogram observation per row: Ray's Histogram has no weighted or bulk observe (checked in
        ray.util.metrics for 2.60: `observe(value, tags)` only), and a Counter per bucket would be exported
        as `..._bucket_total`, not the `_bucket` series the canary controller and the dashboards read.
        What can be shared is: one tags dict per batch, plain floats, a bound method."""
        tags = self._tags(version, variant)
        observe = self._score.observe
        for value in scores:
            observe(value, tags)
        if positives:
            self._positives.inc(positives, tags=tags)
