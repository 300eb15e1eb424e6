"""Serving metrics, recorded through `ray.serve.metrics` so Ray exports them on its metrics endpoint.

Ray adds the `deployment`, `replica` and `application` labels itself; ferry adds `model`, `version` and
`variant` (champion | challenger | none, the latter for requests rejected before routing), and
`outcome` (ok | client_error | server_error) on the request counter. Ray's exporter prefixes every
application metric with `ray_`, so Prometheus sees:

    ray_ferry_serving_requests_total{model,version,variant,outcome}          counter, one per scored row
                                                                             (a rejected request counts once)
    ray_ferry_serving_latency_ms_bucket|_sum|_count{model,version,variant}  histogram, per HTTP request
    ray_ferry_serving_score_bucket_total{model,version,variant,le}          scored rows with score <= le
    ray_ferry_serving_predicted_positive_total{model,version,variant}       counter of decision == true

The positive rate is `rate(..._predicted_positive_total) / rate(..._requests_total{outcome="ok"})`.
The canary controller compares these per variant; the score buckets' fixed boundaries are what its
PSI is computed over, so they must not change between versions.

The score distribution is a histogram's bucket series kept as one counter per `le` (cumulative, `+Inf`
included), so `histogram_quantile` and heatmaps read it as they read any `_bucket`. Not a Ray Histogram:
that takes one value per `observe` (checked in ray.util.metrics for 2.60: `observe(value, tags)` only),
~2.4 µs each, 0.6 ms for a 256-row batch: a third of the replica's work per batch. Here each batch's
bucket counts are computed with numpy and added to an in-process tally (`ScoreTally`, ~µs), which a
daemon thread (`TallyFlusher`) adds to the Ray counters every FLUSH_INTERVAL_S: ~20 counter updates
(~4 µs each) per variant and second, whatever the traffic, instead of per request. Ray itself reports
metrics every few seconds, so the flush adds at most a second before Prometheus can see a row.
Ray refuses an increment of 0, so a bucket below every score seen so far has no series yet; readers
count a missing bucket as 0, which is exact: a cumulative count is missing only while it is 0, and then
so are all below it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import numpy as np

from ferry.serving.watcher import LOGGER_NAME, BackgroundLoop

REQUESTS = "ferry_serving_requests_total"
LATENCY = "ferry_serving_latency_ms"
SCORE_BUCKETS = "ferry_serving_score_bucket_total"
POSITIVES = "ferry_serving_predicted_positive_total"
EXPORT_PREFIX = "ray_"

LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000,
                         5000, 10000]
SCORE_BOUNDARIES = [round(i / 20, 2) for i in range(1, 20)]  # 0.05 … 0.95; +Inf catches 1.0
SCORE_LE = [*(f"{b:g}" for b in SCORE_BOUNDARIES), "+Inf"]  # the `le` values, as Prometheus writes them

FLUSH_INTERVAL_S = 1.0
OK, CLIENT_ERROR, SERVER_ERROR = "ok", "client_error", "server_error"
logger = logging.getLogger(LOGGER_NAME)
UNROUTED = "none"


class Recorder(Protocol):
    def request(self, outcome: str, version: str, variant: str, count: int = 1) -> None: ...

    def latency(self, version: str, variant: str, ms: float) -> None: ...

    def scores(self, version: str, variant: str, scores: np.ndarray, positives: int) -> None: ...


class NullRecorder:
    """For tests and tools that run the scoring service outside Ray."""

    def request(self, outcome: str, version: str, variant: str, count: int = 1) -> None:
        return None

    def latency(self, version: str, variant: str, ms: float) -> None:
        return None

    def scores(self, version: str, variant: str, scores: np.ndarray, positives: int) -> None:
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
        self._score = metrics.Counter(SCORE_BUCKETS, "Scored rows whose score is at most le (cumulative).",
                                      tag_keys=(*keys, "le"))
        self._positives = metrics.Counter(POSITIVES, "Rows whose decision was positive.", tag_keys=keys)
        self.tally = ScoreTally()

    def _tags(self, version: str, variant: str) -> dict[str, str]:
        return {"model": self.model, "version": version, "variant": variant}

    def request(self, outcome: str, version: str, variant: str, count: int = 1) -> None:
        self._requests.inc(count, tags={**self._tags(version, variant), "outcome": outcome})

    def latency(self, version: str, variant: str, ms: float) -> None:
        self._latency.observe(ms, tags=self._tags(version, variant))

    def scores(self, version: str, variant: str, scores: np.ndarray, positives: int) -> None:
        self.tally.add(version, variant, cumulative_counts(scores))
        if positives:
            self._positives.inc(positives, tags=self._tags(version, variant))

    def flush(self) -> None:
        """Add the tallied score buckets to the Ray counters (from the flusher thread, and at shutdown)."""
        for (version, variant), counts in self.tally.drain().items():
            tags = self._tags(version, variant)
            for le, count in zip(SCORE_LE, counts.tolist(), strict=True):
                if count:
                    self._score.inc(count, tags={**tags, "le": le})


class ScoreTally:
    """Cumulative score-bucket counts per (version, variant) since the last drain. The request path adds
    (the replica's event loop), the flusher drains (its own thread): a lock, held for one numpy add."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], np.ndarray] = {}

    def add(self, version: str, variant: str, counts: np.ndarray) -> None:
        key = (version, variant)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                self._pending[key] = counts.copy()
            else:
                pending += counts

    def drain(self) -> dict[tuple[str, str], np.ndarray]:
        with self._lock:
            drained, self._pending = self._pending, {}
        return drained


class Flushable(Protocol):
    def flush(self) -> None: ...


class TallyFlusher(BackgroundLoop):
    THREAD_PREFIX = "ferry-metrics"

    def __init__(self, model: str, recorder: Flushable, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.model, self.recorder, self.interval_s = model, recorder, interval_s
        super().__init__()

    def _loop(self) -> None:
        while True:
            stopping = self._stop.wait(self.interval_s)
            try:
                self.recorder.flush()
            except Exception:  # a metrics failure must never take the router down
                logger.exception("flushing the score buckets of %s failed; trying again", self.model)
            if stopping:
                return


_BOUNDARIES = np.array(SCORE_BOUNDARIES)


def cumulative_counts(scores: np.ndarray) -> np.ndarray:
    """How many scores are <= each boundary, then the total (the `+Inf` bucket), as Prometheus counts `le`."""
    counts = np.empty(len(SCORE_LE), dtype=np.int64)
    counts[:-1] = np.searchsorted(np.sort(scores), _BOUNDARIES, side="right")
    counts[-1] = len(scores)
    return counts
