"""Feedback for a ranking workload: what each answer listed, what the other model would have listed, what came back.

A ranking workload opts in by declaring `feedback_model` (what a client posts when a user acts on an answer: the
recommender's click, `{user_id, item_id}`; it shares exactly one field with the request, the user it joins by)
and `answered_items(answer) -> list of item ids` (the items one answer listed, best first). With a prediction log
configured, the router then keeps three logs under the same URI and layout as the scoring path's
(ferry.serving.prediction_log), off the request path:

- `predictions`: each answered request (its fields, a `request_id` drawn by the router, the items listed, the
  version and variant that answered, serving time);
- `shadow`: for a sampled share of requests while a challenger is loaded (`ferry.rollout.shadow_sample`, set by
  the rollout controller when the spec has `rollout.shadow`), the items the model that did not answer would have
  listed for the same request, by `request_id` (null when it failed);
- `labels`: the feedback as posted on `POST /<endpoint>/feedback`, with its arrival time.

A click is attributed to the user's latest answered request before it arrived; it is a hit for a model when that
model's list held the clicked item. With the shadow list beside the answer, both models are judged on the same
clicks (ferry.steps.feedback): a paired comparison of hit rates, as the fraud workload's labels pair scores.

What a user can never see from here: the answer is computed before anything is logged or mirrored; the logs only
queue rows, and the shadow worker's queue is bounded (`max_queued_rows`; a full queue drops rows, counted).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel

from ferry.contract.names import LOG_LABELS, LOG_PREDICTIONS, LOG_SHADOW
from ferry.serving.prediction_log import (
    SERVING_TIME_COLUMN,
    LogLimits,
    PredictionLog,
    arrow_fields,
    join_key,
    label_schema,
)
from ferry.serving.shadow import MAX_QUEUED_ROWS, ShadowWorker, mirror_groups
from ferry.serving.watcher import Loaded, RolloutState

FEEDBACK_HOOKS = ("feedback_model", "answered_items")
REQUEST_ID_COLUMN = "request_id"
ITEMS_COLUMN = "items"
RankItems = Callable[[Loaded, list[BaseModel]], list[list[int]]]  # a model's listed items for requests


def takes_feedback(workload: Any) -> bool:
    """Whether the (ranking) workload declares what feedback on its answers looks like."""
    return all(hasattr(workload, name) for name in FEEDBACK_HOOKS)


def feedback_item(workload: Any) -> str:
    """The feedback field that names the item acted on: the one that is not the request's (user) key."""
    key = join_key(workload.request_model, workload.feedback_model)
    others = [name for name in workload.feedback_model.model_fields if name != key]
    if len(others) != 1:
        raise TypeError(f"{workload.feedback_model.__name__} must hold the request's {key!r} and one item field, "
                        f"not {others}")
    return others[0]


def answers_schema(request_fields: Sequence[tuple[str, Any]]) -> Any:
    import pyarrow as pa

    return pa.schema([*request_fields, (REQUEST_ID_COLUMN, pa.string()), (ITEMS_COLUMN, pa.list_(pa.int64())),
                      ("version", pa.string()), ("variant", pa.string()),
                      (SERVING_TIME_COLUMN, pa.timestamp("us", tz="UTC"))])


def mirrored_schema() -> Any:
    import pyarrow as pa

    return pa.schema([(REQUEST_ID_COLUMN, pa.string()), (ITEMS_COLUMN, pa.list_(pa.int64())),
                      ("version", pa.string()), ("variant", pa.string()), ("shadow_ms", pa.float64()),
                      (SERVING_TIME_COLUMN, pa.timestamp("us", tz="UTC"))])


class RankingLog:
    """A ranking router's three logs (answers, shadow lists, feedback) for one model under one URI."""

    def __init__(self, uri: str, model: str, request_model: type[BaseModel], feedback_model: type[BaseModel],
                 limits: LogLimits | None = None) -> None:
        limits = limits or LogLimits()
        self.request_names = list(request_model.model_fields)
        self.feedback_names = list(feedback_model.model_fields)
        self.key = join_key(request_model, feedback_model)
        self.predictions = PredictionLog(uri, LOG_PREDICTIONS, model, answers_schema(arrow_fields(request_model)),
                                         limits)
        self.shadow = PredictionLog(uri, LOG_SHADOW, model, mirrored_schema(), limits)
        self.labels = PredictionLog(uri, LOG_LABELS, model, label_schema(arrow_fields(feedback_model)), limits)

    def answered(self, rows: Sequence[BaseModel], request_ids: Sequence[str], items: Sequence[Sequence[int]],
                 versions: Sequence[str], variants: Sequence[str], serving_s: float) -> None:
        columns: dict[str, Any] = {name: [getattr(row, name) for row in rows] for name in self.request_names}
        columns.update({REQUEST_ID_COLUMN: list(request_ids), ITEMS_COLUMN: [list(i) for i in items],
                        "version": list(versions), "variant": list(variants),
                        SERVING_TIME_COLUMN: [datetime.fromtimestamp(serving_s, UTC)] * len(rows)})
        self.predictions.append(columns)

    def shadowed(self, request_ids: Sequence[str], items: Sequence[Sequence[int] | None], version: str, variant: str,
                 shadow_ms: float) -> None:
        rows = len(request_ids)
        self.shadow.append({REQUEST_ID_COLUMN: list(request_ids), ITEMS_COLUMN: [None if i is None else list(i)
                                                                                 for i in items],
                            "version": [version] * rows, "variant": [variant] * rows, "shadow_ms": [shadow_ms] * rows,
                            SERVING_TIME_COLUMN: [datetime.now(UTC)] * rows})

    def clicked(self, rows: Sequence[BaseModel], arrival_s: float) -> None:
        """Queue feedback as it was posted (repeats too: the log keeps what arrived, and when)."""
        columns: dict[str, Any] = {name: [getattr(row, name) for row in rows] for name in self.feedback_names}
        columns["arrival_time"] = [datetime.fromtimestamp(arrival_s, UTC)] * len(rows)
        self.labels.append(columns)

    @property
    def dropped_rows(self) -> int:
        return self.predictions.dropped_rows + self.shadow.dropped_rows + self.labels.dropped_rows

    def close(self, timeout_s: float = 30.0) -> None:
        for log in (self.predictions, self.shadow, self.labels):
            log.close(timeout_s)


def new_request_ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


@dataclass(frozen=True)
class MirroredBatch:
    model: Loaded  # the model that did not answer these requests
    variant: str  # its role
    rows: list[BaseModel]
    request_ids: list[str]


def mirrored_batches(state: RolloutState, versions: np.ndarray, rows: Sequence[BaseModel],
                     request_ids: Sequence[str], rng: np.random.Generator) -> list[MirroredBatch]:
    """The sampled requests of one answered batch, grouped by the model that did not answer them."""
    return [MirroredBatch(other, role, [rows[i] for i in index.tolist()], [request_ids[i] for i in index.tolist()])
            for other, role, index in mirror_groups(state, versions, rng)]


class RankingShadow(ShadowWorker):
    """Ranks offered requests with the model that did not answer and logs its lists (ferry.serving.shadow's
    worker: bounded queue, failures logged with no list)."""

    def __init__(self, log: RankingLog, rank_items: RankItems, max_queued_rows: int = MAX_QUEUED_ROWS,
                 seed: int | None = None) -> None:
        super().__init__(max_queued_rows, seed)
        self.log, self.rank_items = log, rank_items

    def offer(self, state: RolloutState, versions: np.ndarray, rows: Sequence[BaseModel],
              request_ids: Sequence[str]) -> None:
        """Queue the sampled requests of an answered batch; never waits for ranking."""
        for batch in mirrored_batches(state, versions, rows, request_ids, self.rng):
            self.queue(batch, len(batch.rows))

    def work(self, batch: MirroredBatch) -> list[Any]:
        return list(self.rank_items(batch.model, batch.rows))

    def record(self, batch: MirroredBatch, results: list[Any], elapsed_ms: float) -> None:
        self.log.shadowed(batch.request_ids, results, batch.model.version, batch.variant, elapsed_ms)
