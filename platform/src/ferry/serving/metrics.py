"""Serving metrics, recorded through `ray.serve.metrics` so Ray exports them on its metrics endpoint.

Their names, labels, help texts and boundaries are the catalogue's (`ferry.contract.metrics`, section
SERVING): the request counter (one per scored row; a rejected request counts once), the latency histogram
(per HTTP request), the score buckets and the positive-decision counter. Ray adds the `deployment`,
`replica` and `application` labels itself and prefixes every application metric with `ray_`. The canary
controller compares these per variant; the score buckets' fixed boundaries are what its PSI is computed
over, so they must not change between versions.

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

from ferry.contract import metrics as m
from ferry.contract.metrics import SCORE_BOUNDARIES, SCORE_LE
from ferry.serving.watcher import LOGGER_NAME, BackgroundLoop

FLUSH_INTERVAL_S = 1.0
# The request counter's outcomes and the variant of a request rejected before routing, as the service and
# the API record them.
OK, CLIENT_ERROR, SERVER_ERROR = m.OUTCOME_OK, m.OUTCOME_CLIENT_ERROR, m.OUTCOME_SERVER_ERROR
UNROUTED = m.VARIANT_UNROUTED
logger = logging.getLogger(LOGGER_NAME)


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

        def keys(metric: m.Metric) -> Any:
            return metric.label_names  # Ray's stubs type tag_keys as a 1-tuple

        self.model = model
        self._requests = metrics.Counter(m.SERVING_REQUESTS.name, m.SERVING_REQUESTS.help,
                                         tag_keys=keys(m.SERVING_REQUESTS))
        self._latency = metrics.Histogram(m.SERVING_LATENCY.name, m.SERVING_LATENCY.help,
                                          boundaries=list(m.SERVING_LATENCY.boundaries),
                                          tag_keys=keys(m.SERVING_LATENCY))
        self._score = metrics.Counter(m.SERVING_SCORE_BUCKETS.name, m.SERVING_SCORE_BUCKETS.help,
                                      tag_keys=keys(m.SERVING_SCORE_BUCKETS))
        self._positives = metrics.Counter(m.SERVING_POSITIVES.name, m.SERVING_POSITIVES.help,
                                          tag_keys=keys(m.SERVING_POSITIVES))
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
