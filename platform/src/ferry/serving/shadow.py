"""Shadow scoring: the model that did not answer a request also scores it, off the response path.

While a challenger is loaded and its `ferry.rollout.shadow_sample` tag is above 0 (the rollout controller sets
it when the spec has `rollout.shadow`), every answered raw batch offers its rows here after the answer is
computed. A sampled share of them is queued, and one worker thread per replica scores the queued rows with
the *other* model (the challenger for rows the champion answered, and the reverse) and appends the scores to
the `shadow` log beside the prediction log. Labelled transactions then carry both models' scores, which is
what the controller's paired judgement on outcomes reads (ferry.steps.outcomes).

What a user can never see from here: the answer is already computed when rows are offered, so the request
waits only for the offer itself (a sample draw and a hand-over to the worker's queue, bounded by
`max_queued_rows`: a full queue drops the rows, counted in `dropped_rows`); a model that fails in shadow is
logged with no score (`score` null) and never raises into the request path.

The worker scores what is queued in passes, one per model, at most every `coalesce_s` (20 ms): single payments
would otherwise cost a forward pass and a log batch each, in a thread that shares the replica's GIL and cores
with the next request (docs/benchmarks/raw-serving.md measures what shadow scoring adds to a response).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferry.serving.routing import CHALLENGER, CHAMPION
from ferry.serving.service import run_model
from ferry.serving.watcher import Loaded, RolloutState

logger = logging.getLogger("ray.serve.ferry.shadow")
MAX_QUEUED_ROWS = 50_000
COALESCE_S = 0.02


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
    what the work is (`work`: one result per row) and where its results go (`record`); their batches are
    dataclasses with `model` and `variant` and per-row lists or arrays, which a pass joins per model."""

    def __init__(self, max_queued_rows: int = MAX_QUEUED_ROWS, seed: int | None = None,
                 coalesce_s: float = COALESCE_S) -> None:
        self.max_queued_rows, self.coalesce_s = max_queued_rows, coalesce_s
        self.rng = np.random.default_rng(seed)
        self.dropped_rows = self.failed_rows = self.done_rows = self.passes = 0
        self._queue: list[tuple[Any, int]] = []
        self._queued_rows = 0
        self._closing = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="ferry-shadow", daemon=True)
        self._thread.start()

    def queue(self, batch: Any, rows: int) -> None:
        with self._wake:
            if self._queued_rows + rows > self.max_queued_rows:
                self.dropped_rows += rows
                return
            self._queued_rows += rows
            self._queue.append((batch, rows))
            self._wake.notify()

    def close(self) -> None:
        """Finish what is queued (bounded by `max_queued_rows`), then stop; the log is closed by its owner."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    def work(self, batch: Any) -> list[Any]:
        raise NotImplementedError

    def record(self, batch: Any, results: list[Any], elapsed_ms: float) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return
                closing = self._closing
            if not closing and self.coalesce_s > 0:
                time.sleep(self.coalesce_s)  # the next requests' rows join this pass
            with self._wake:
                queued, self._queue, self._queued_rows = self._queue, [], 0
            for batch, rows in _per_model(queued):
                self._run(batch, rows)

    def _run(self, batch: Any, rows: int) -> None:
        started = time.perf_counter()
        self.passes += 1
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


def _per_model(queued: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    """Queued batches joined into one per model and role (the model object itself: a version reloaded since is
    another model), in the order each first came."""
    groups: dict[tuple[int, str], list[tuple[Any, int]]] = {}
    for batch, rows in queued:
        groups.setdefault((id(batch.model), batch.variant), []).append((batch, rows))
    return [(_joined([batch for batch, _ in group]), sum(rows for _, rows in group)) for group in groups.values()]


def _joined(batches: list[Any]) -> Any:
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    joined: dict[str, Any] = {}
    for field in dataclasses.fields(first):
        values = [getattr(batch, field.name) for batch in batches]
        if field.name in ("model", "variant"):
            joined[field.name] = values[0]
        elif isinstance(values[0], np.ndarray):
            joined[field.name] = np.concatenate(values)
        else:
            joined[field.name] = [item for value in values for item in value]
    return dataclasses.replace(first, **joined)


class ShadowScorer(ShadowWorker):
    """Scores offered batches with the model that did not answer and logs the scores."""

    def __init__(self, log: Any, max_queued_rows: int = MAX_QUEUED_ROWS, seed: int | None = None,
                 coalesce_s: float = COALESCE_S) -> None:
        super().__init__(max_queued_rows, seed, coalesce_s)
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
