"""Scoring without Ray: route rows by sticky key, run champion and challenger in-process, record metrics.

The Serve deployment in `app.py` wraps this; unit tests drive it directly with fake models.
The registered model's contract (what `ferry step register` logs) is workload-neutral: a float32 matrix
of the workload's feature columns in, one score in [0, 1] per row out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pydantic_core
from pydantic import BaseModel

from ferry.contract.errors import FerryError
from ferry.serving import metrics
from ferry.serving.drift import DriftMonitor
from ferry.serving.faults import FaultBook, InjectedFault, predictions
from ferry.serving.online import takes_raw_requests
from ferry.serving.prediction_log import ServingLog
from ferry.serving.routing import CHALLENGER, CHAMPION, Variant, challenger_rows, choose
from ferry.serving.schemas import Info, Prediction
from ferry.serving.watcher import LOGGER_NAME, Loaded, RegistryWatcher, RolloutState

logger = logging.getLogger(LOGGER_NAME)
DEFAULT_THRESHOLD = 0.5
T = TypeVar("T")


class NoChampion(FerryError):
    """No champion has been loaded yet: the router is alive but not ready."""


class ScoringFailed(FerryError):
    """The champion raised while scoring: a server error, counted against its version."""

    def __init__(self, version: str, variant: Variant, rows: int) -> None:
        super().__init__(f"{variant} version {version} failed on {rows} row(s)")
        self.version, self.variant, self.rows = version, variant, rows


@dataclass(frozen=True)
class WorkloadView:
    """The part of a workload serving needs: its request model, feature columns, sticky key, threshold."""

    request_model: type[BaseModel]
    feature_names: tuple[str, ...]
    routing_key: str | None
    threshold: float
    raw_request_model: type[BaseModel] | None = None  # set: `/predict` takes raw requests (ferry.serving.online)
    label_model: type[BaseModel] | None = None
    event_time_field: str | None = None  # the raw request's event time, logged as `event_time`

    @classmethod
    def of(cls, workload: Any) -> WorkloadView:
        model: type[BaseModel] = workload.request_model
        key = getattr(workload, "routing_key", None)
        names = getattr(workload, "feature_names", None) or tuple(f for f in model.model_fields if f != key)
        raw = takes_raw_requests(workload)
        return cls(model, tuple(names), key, float(getattr(workload, "threshold", DEFAULT_THRESHOLD)),
                   workload.raw_request_model if raw else None, workload.label_model if raw else None,
                   workload.event_time_field if raw else None)


def run_model(module: Any, features: np.ndarray) -> np.ndarray:
    """Scores of a torch module (an exported program's module: no .eval(), it is frozen at export)."""
    import torch

    with torch.inference_mode():
        out = module(torch.from_numpy(features))
    scores = np.asarray(out.detach().cpu().numpy(), dtype=np.float64).reshape(-1)
    if scores.shape[0] != features.shape[0]:
        raise ValueError(f"model returned {scores.shape[0]} scores for {features.shape[0]} rows")
    return scores


@dataclass
class Scored:
    """One batch's answers, column-wise (numpy arrays, the per-row labels as object arrays), so the batch
    endpoint writes its JSON without a pydantic model per row; `results()` gives the per-row objects the
    single-request path answers with."""

    model: str
    scores: np.ndarray  # float64 per row; NaN for a row that drew an injected fault
    versions: np.ndarray  # str per row
    variants: np.ndarray  # Variant per row
    decisions: np.ndarray
    faults: dict[int, InjectedFault]
    served: set[tuple[str, Variant]]  # (version, variant) pairs that scored rows: the latency labels

    @classmethod
    def empty(cls, model: str, rows: int) -> Scored:
        return cls(model, np.full(rows, np.nan), np.full(rows, "", dtype=object),
                   np.full(rows, CHAMPION, dtype=object), np.zeros(rows, dtype=bool), {}, set())

    def fill(self, index: np.ndarray, version: str, variant: Variant, scores: np.ndarray, threshold: float) -> None:
        self.scores[index] = scores
        self.decisions[index] = scores >= threshold
        self.versions[index] = version
        self.variants[index] = variant
        self.served.add((version, variant))

    def fail(self, row: int, fault: InjectedFault) -> None:
        self.faults[row] = fault
        self.versions[row] = fault.version
        self.variants[row] = CHALLENGER if fault.variant == CHALLENGER else CHAMPION

    def unfailed(self) -> np.ndarray:
        mask = np.ones(len(self.scores), dtype=bool)
        if self.faults:
            mask[list(self.faults)] = False
        return mask

    def scores_of(self, variant: Variant) -> np.ndarray:
        return self.scores[(self.variants == variant) & ~np.isnan(self.scores)]

    def answers(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The answers of `rows` (an index or mask), column-wise, as the prediction log keeps them."""
        return {"version": self.versions[rows], "variant": self.variants[rows], "score": self.scores[rows],
                "decision": self.decisions[rows]}

    def first_fault(self) -> InjectedFault | None:
        return self.faults[min(self.faults)] if self.faults else None

    def results(self) -> list[Prediction | InjectedFault]:
        scores, decisions = self.scores.tolist(), self.decisions.tolist()
        versions, variants = self.versions.tolist(), self.variants.tolist()
        return [self.faults[i] if i in self.faults else Prediction(
            score=scores[i], decision=decisions[i], model=self.model, version=versions[i],
            variant=variants[i]) for i in range(len(scores))]

    def to_json(self) -> bytes:
        """`{"predictions": [...]}` as `BatchPredictions` would serialise it (a batch without faults)."""
        rows = [{"score": s, "decision": d, "model": self.model, "version": v, "variant": a} for s, d, v, a in zip(
            self.scores.tolist(), self.decisions.tolist(), self.versions.tolist(), self.variants.tolist(),
            strict=True)]
        return pydantic_core.to_json({"predictions": rows})


class ScoringService:
    def __init__(self, model: str, workload: WorkloadView, watcher: RegistryWatcher,
                 recorder: metrics.Recorder, fingerprint: str = "", faults: FaultBook | None = None,
                 drift: DriftMonitor | None = None, online: Any | None = None,
                 log: ServingLog | None = None, shadow: Any | None = None) -> None:
        self.model = model
        self.log = log  # the prediction and label log (ferry.serving.prediction_log), when configured
        self.shadow = shadow  # the shadow scorer (ferry.serving.shadow), with the log
        self.quality: Any | None = None  # the quality monitor (ferry.serving.quality), with the log and gates
        self.online = online  # the workload's online features (ferry.serving.online), when it takes raw requests
        self.drift = drift  # live drift against the champion's training reference (ferry.serving.drift)
        self.workload = workload
        self.watcher = watcher
        self.recorder = recorder
        self.fingerprint = fingerprint
        self.faults = faults  # None unless the app args allow fault injection (ferry.serving.faults)

    def ready(self) -> bool:
        return self.watcher.state.champion is not None

    def score(self, rows: Sequence[BaseModel]) -> list[Prediction]:
        """One prediction per row, in order; one registry state (snapshot) for the whole batch.
        Raises InjectedFault when fault injection is on and a row drew one."""
        return predictions(self.score_each(rows))

    def score_each(self, rows: Sequence[BaseModel]) -> list[Prediction | InjectedFault]:
        """Like `score`, but a row that drew an injected fault gets its InjectedFault in its place, so a
        batch of several HTTP requests fails only the requests that drew one."""
        key = self.workload.routing_key
        keys = [getattr(row, key) for row in rows] if key else None
        return self.score_batch(keys, self.features(rows)).results()

    def score_single(self, row: BaseModel) -> Prediction | InjectedFault:
        """`score_each([row])[0]` without the batch bookkeeping (a dozen numpy calls on one element, a tenth
        of a single request's time in the replica): the same routing, fallback, metrics and drift."""
        if self.faults is not None:
            return self.score_each([row])[0]
        state = self.watcher.state
        if state.champion is None:
            raise NoChampion(f"no champion of {self.model} is loaded yet")
        key = self.workload.routing_key
        loaded, served_as, scores = self._score_row(state, getattr(row, key) if key else None, self.features([row]))
        score = float(scores[0])
        return Prediction(score=score, decision=score >= self.workload.threshold, model=self.model,
                          version=loaded.version, variant=served_as)

    def _score_row(self, state: RolloutState, key: Any, features: np.ndarray) -> tuple[Loaded, Variant, np.ndarray]:
        """One row (features 1 × n) scored as `score_batch` would, without its per-batch masks."""
        assert state.champion is not None
        variant = choose(key, state.weight, state.challenger is not None)
        loaded, served_as, scores = self._score_group(state, variant, features)
        if self.drift is not None:
            self.drift.observe(state.champion.version, features, scores if served_as == CHAMPION else ())
        return loaded, served_as, scores

    def score_batch(self, keys: Sequence[Any] | np.ndarray | None, features: np.ndarray) -> Scored:
        """Score a feature matrix (rows in the workload's feature order) column-wise: one registry state
        (snapshot) for the whole batch, one forward pass and one metrics update per variant."""
        state = self.watcher.state
        if state.champion is None:
            raise NoChampion(f"no champion of {self.model} is loaded yet")
        rows = int(features.shape[0])
        if rows == 1 and self.faults is None:  # a single raw request: as score_single does
            key = None if keys is None else keys[0].item() if isinstance(keys, np.ndarray) else keys[0]
            loaded, served_as, scores = self._score_row(state, key, features)
            scored = Scored.empty(self.model, 1)
            scored.fill(np.zeros(1, dtype=np.int64), loaded.version, served_as, scores, self.workload.threshold)
            return scored
        to_challenger = challenger_rows(keys, rows, state.weight, state.challenger is not None)
        scored = Scored.empty(self.model, rows)
        if self.faults is not None:
            self._inject(state, to_challenger, scored)
        unfailed = scored.unfailed()
        for variant, rows_of_variant in ((CHAMPION, ~to_challenger), (CHALLENGER, to_challenger)):
            index = np.flatnonzero(rows_of_variant & unfailed)
            if index.size:
                loaded, served_as, scores = self._score_group(state, variant, features[index])
                scored.fill(index, loaded.version, served_as, scores, self.workload.threshold)
        if self.drift is not None:
            self.drift.observe(state.champion.version, features, scored.scores_of(CHAMPION))
        return scored

    def _inject(self, state: RolloutState, to_challenger: np.ndarray, scored: Scored) -> None:
        """Fail the rows whose version's `ferry.fault.error_rate` draw says so; count them as server errors."""
        assert self.faults is not None
        for i, challenger in enumerate(to_challenger.tolist()):
            variant: Variant = CHALLENGER if challenger else CHAMPION
            loaded = state.challenger if variant == CHALLENGER else state.champion
            if loaded is not None and self.faults.fails(loaded.version):
                scored.fail(i, InjectedFault(loaded.version, variant))
                self.recorder.request(metrics.SERVER_ERROR, loaded.version, variant)

    def features(self, rows: Sequence[BaseModel]) -> np.ndarray:
        names = self.workload.feature_names
        matrix = np.array([[getattr(row, name) for name in names] for row in rows], dtype=np.float32)
        return matrix.reshape(len(rows), len(names))

    def _score_group(self, state: RolloutState, variant: Variant,
                     features: np.ndarray) -> tuple[Loaded, Variant, np.ndarray]:
        loaded, served_as, scores = answered_by(state, variant, len(features), self.recorder,
                                                lambda model: run_model(model.module, features))
        positives = int(np.count_nonzero(scores >= self.workload.threshold))
        self.recorder.request(metrics.OK, loaded.version, served_as, len(scores))
        self.recorder.scores(loaded.version, served_as, scores, positives)
        return loaded, served_as, scores

    def info(self) -> Info:
        return served_info(self.model, self.fingerprint, self.watcher,
                           None if self.log is None else self.log.dropped_rows)


def answered_by(state: RolloutState, variant: Variant, rows: int, recorder: metrics.Recorder,
                run: Callable[[Loaded], T]) -> tuple[Loaded, Variant, T]:
    """`run` on the variant's model: (the model that answered, as which variant, its answer). A failing champion
    raises ScoringFailed (a 500, counted against its version). A failing challenger must not fail users: its
    errors are counted (the canary controller rolls it back on them) and the champion answers instead."""
    loaded = state.challenger if variant == CHALLENGER else state.champion
    assert loaded is not None
    try:
        return loaded, variant, run(loaded)
    except Exception as exc:
        if variant == CHAMPION:
            raise ScoringFailed(loaded.version, variant, rows) from exc
        recorder.request(metrics.SERVER_ERROR, loaded.version, variant, rows)
        logger.exception("challenger %s failed; answering %d row(s) with the champion", loaded.version, rows)
        return answered_by(state, CHAMPION, rows, recorder, run)


def served_info(model: str, fingerprint: str, watcher: RegistryWatcher, log_dropped_rows: int | None = None) -> Info:
    """`/info`: what the router serves now and how fresh its view of the registry is."""
    state = watcher.state
    age = None if watcher.last_poll is None else round(time.monotonic() - watcher.last_poll, 3)
    return Info(model=model, fingerprint=fingerprint, champion=state.champion.version if state.champion else None,
                challenger=state.challenger.version if state.challenger else None, weight=state.weight,
                shadow_sample=state.shadow_sample, registry_reachable=watcher.reachable,
                last_error=watcher.last_error, seconds_since_poll=age,
                log_dropped_rows=log_dropped_rows)
