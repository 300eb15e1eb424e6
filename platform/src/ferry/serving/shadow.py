"""Shadow scoring: the model that did not answer a request also scores it, off the response path.

While a challenger is loaded and its `ferry.rollout.shadow_sample` tag is above 0 (the rollout controller sets
it when the spec has `rollout.shadow`), every answered raw batch offers its rows here after the answer is
computed. A sampled share of them is queued, and one worker thread per replica scores each queued batch with
the *other* model (the challenger for rows the champion answered, and the reverse) and appends the scores to
the `shadow` log beside the prediction log. Labelled transactions then carry both models' scores, which is
what the controller's paired judgement on outcomes reads (ferry.steps.outcomes).

What a user can never see from here: the answer is already computed when rows are offered, so the request
waits only for the offer itself (a sample draw and a hand-over to the worker's queue, bounded by
`max_queued_rows`: a full queue drops the rows, counted in `dropped_rows`); a model that fails in shadow is
logged with no score (`score` null) and never raises into the request path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferry.serving.routing import CHALLENGER, CHAMPION
from ferry.serving.service import run_model
from ferry.serving.watcher import Loaded, RolloutState

logger = logging.getLogger("ray.serve.ferry.shadow")
MAX_QUEUED_ROWS = 50_000


@dataclass(frozen=True)
class ShadowBatch:
    model: Loaded  # the model that did not answer these rows
    variant: str  # its role: champion or challenger
    keys: list[Any]
    event_times: list[Any]
    features: np.ndarray


def mirror_groups(state: RolloutState, versions: np.ndarray,
                  rng: np.random.Generator) -> list[tuple[Loaded, str, np.ndarray]]:
    """The sampled rows of one answered batch (their indices), grouped by the model that did not answer them,
    with its role. Rows answered by a version that is neither alias any more (the state moved since) are left
    out."""
    if state.champion is None or state.challenger is None or state.shadow_sample <= 0:
        return []
    sampled = rng.random(len(versions)) < state.shadow_sample
    groups: list[tuple[Loaded, str, np.ndarray]] = []
    for answered, other, role in ((state.champion, state.challenger, CHALLENGER),
                                  (state.challenger, state.champion, CHAMPION)):
        index = np.flatnonzero(sampled & (versions == answered.version))
        if index.size:
            groups.append((other, role, index))
    return groups


def shadow_batches(state: RolloutState, versions: np.ndarray, keys: Sequence[Any], event_times: Sequence[Any],
                   features: np.ndarray, rng: np.random.Generator) -> list[ShadowBatch]:
    """The sampled rows of one answered batch, grouped by the model that did not answer them."""
    return [ShadowBatch(other, role, [keys[i] for i in index.tolist()], [event_times[i] for i in index.tolist()],
                        features[index]) for other, role, index in mirror_groups(state, versions, rng)]


class ShadowWorker:
    """One worker thread for the model that did not answer, behind a queue bounded in rows: `queue` never waits
    for the work, a full queue drops the rows (counted in `dropped_rows`), and work that fails is recorded with
    no result (`None` per row, counted in `failed_rows`) and never raises into the request path. Subclasses say
    what the work is (`work`: one result per row) and where its results go (`record`)."""

    def __init__(self, max_queued_rows: int = MAX_QUEUED_ROWS, seed: int | None = None) -> None:
        self.max_queued_rows = max_queued_rows
        self.rng = np.random.default_rng(seed)
        self.dropped_rows = self.failed_rows = self.done_rows = 0
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-shadow")

    def queue(self, batch: Any, rows: int) -> None:
        with self._lock:
            if self._queued_rows + rows > self.max_queued_rows:
                self.dropped_rows += rows
                return
            self._queued_rows += rows
        self._worker.submit(self._run, batch, rows)

    def close(self) -> None:
        """Finish what is queued (bounded by `max_queued_rows`), then stop; the log is closed by its owner."""
        self._worker.shutdown(wait=True)

    def work(self, batch: Any) -> list[Any]:
        raise NotImplementedError

    def record(self, batch: Any, results: list[Any], elapsed_ms: float) -> None:
        raise NotImplementedError

    def _run(self, batch: Any, rows: int) -> None:
        with self._lock:
            self._queued_rows -= rows
        started = time.perf_counter()
        try:
            results = self.work(batch)
        except Exception:
            self.failed_rows += rows
            # The first failure with its traceback; a model that fails, fails on every batch.
            logger.error("shadow work of %s v%s failed on %d row(s) (%d so far); logged without a result",
                         batch.variant, batch.model.version, rows, self.failed_rows,
                         exc_info=self.failed_rows == rows)
            results = [None] * rows
        else:
            self.done_rows += rows
        self.record(batch, results, (time.perf_counter() - started) * 1000)


class ShadowScorer(ShadowWorker):
    """Scores offered batches with the model that did not answer and logs the scores."""

    def __init__(self, log: Any, max_queued_rows: int = MAX_QUEUED_ROWS, seed: int | None = None) -> None:
        super().__init__(max_queued_rows, seed)
        self.log = log  # the router's ServingLog (ferry.serving.prediction_log): its `shadow` kind

    def offer(self, state: RolloutState, versions: np.ndarray, keys: Sequence[Any], event_times: Sequence[Any],
              features: np.ndarray) -> None:
        """Queue the sampled rows of an answered batch; never blocks on scoring."""
        for batch in shadow_batches(state, versions, keys, event_times, features, self.rng):
            self.queue(batch, len(batch.keys))

    def work(self, batch: ShadowBatch) -> list[Any]:
        scores: list[Any] = run_model(batch.model.module, batch.features).tolist()
        return scores

    def record(self, batch: ShadowBatch, results: list[Any], elapsed_ms: float) -> None:
        self.log.shadowed(batch.keys, batch.event_times, batch.model.version, batch.variant, results, elapsed_ms)
