"""Scoring without Ray: route rows by sticky key, run champion and challenger in-process, record metrics.

The Serve deployment in `app.py` wraps this; unit tests drive it directly with fake models.
The registered model's contract (what `ferry step register` logs) is workload-neutral: a float32 matrix
of the workload's feature columns in, one score in [0, 1] per row out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from ferry.serving import metrics
from ferry.serving.routing import CHALLENGER, CHAMPION, Variant, choose
from ferry.serving.schemas import Info, Prediction
from ferry.serving.watcher import LOGGER_NAME, Loaded, RegistryWatcher, RolloutState

logger = logging.getLogger(LOGGER_NAME)
DEFAULT_THRESHOLD = 0.5


class NoChampion(Exception):
    """No champion has been loaded yet: the router is alive but not ready."""


class ScoringFailed(Exception):
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

    @classmethod
    def of(cls, workload: Any) -> WorkloadView:
        model: type[BaseModel] = workload.request_model
        key = getattr(workload, "routing_key", None)
        names = getattr(workload, "feature_names", None) or tuple(f for f in model.model_fields if f != key)
        return cls(model, tuple(names), key, float(getattr(workload, "threshold", DEFAULT_THRESHOLD)))


def run_model(module: Any, features: np.ndarray) -> np.ndarray:
    """Scores of a torch module (an exported program's module: no .eval(), it is frozen at export)."""
    import torch

    with torch.inference_mode():
        out = module(torch.from_numpy(features))
    scores = np.asarray(out.detach().cpu().numpy(), dtype=np.float64).reshape(-1)
    if scores.shape[0] != features.shape[0]:
        raise ValueError(f"model returned {scores.shape[0]} scores for {features.shape[0]} rows")
    return scores


class ScoringService:
    def __init__(self, model: str, workload: WorkloadView, watcher: RegistryWatcher,
                 recorder: metrics.Recorder, fingerprint: str = "") -> None:
        self.model = model
        self.workload = workload
        self.watcher = watcher
        self.recorder = recorder
        self.fingerprint = fingerprint

    def ready(self) -> bool:
        return self.watcher.state.champion is not None

    def score(self, rows: Sequence[BaseModel]) -> list[Prediction]:
        """One prediction per row, in order; one registry state (snapshot) for the whole batch."""
        state = self.watcher.state
        if state.champion is None:
            raise NoChampion(f"no champion of {self.model} is loaded yet")
        has_challenger = state.challenger is not None
        key = self.workload.routing_key
        variants = [choose(getattr(row, key) if key else None, state.weight, has_challenger) for row in rows]
        features = self.features(rows)
        results: list[Prediction | None] = [None] * len(rows)
        for variant in (CHAMPION, CHALLENGER):
            index = [i for i, v in enumerate(variants) if v == variant]
            if index:
                for i, prediction in zip(index, self._score_group(state, variant, features[index]), strict=True):
                    results[i] = prediction
        return [p for p in results if p is not None]

    def features(self, rows: Sequence[BaseModel]) -> np.ndarray:
        names = self.workload.feature_names
        return np.array([[getattr(row, name) for name in names] for row in rows], dtype=np.float32)

    def _score_group(self, state: RolloutState, variant: Variant, features: np.ndarray) -> list[Prediction]:
        loaded = state.challenger if variant == CHALLENGER else state.champion
        assert loaded is not None
        try:
            scores = run_model(loaded.module, features)
        except Exception as exc:
            if variant == CHAMPION:
                raise ScoringFailed(loaded.version, variant, len(features)) from exc
            self.recorder.request(metrics.SERVER_ERROR, loaded.version, variant, len(features))
            # A failing challenger must not fail users: its errors are counted (the canary controller rolls
            # it back on them) and the rows are answered by the champion instead.
            logger.exception("challenger %s failed; answering %d row(s) with the champion", loaded.version,
                             len(features))
            return self._score_group(state, CHAMPION, features)
        return self._predictions(loaded, variant, scores)

    def _predictions(self, loaded: Loaded, variant: Variant, scores: np.ndarray) -> list[Prediction]:
        decisions = scores >= self.workload.threshold
        self.recorder.request(metrics.OK, loaded.version, variant, len(scores))
        self.recorder.scores(loaded.version, variant, scores.tolist(), int(decisions.sum()))
        return [Prediction(score=float(s), decision=bool(d), model=self.model, version=loaded.version,
                           variant=variant) for s, d in zip(scores, decisions, strict=True)]

    def info(self) -> Info:
        state, watcher = self.watcher.state, self.watcher
        age = None if watcher.last_poll is None else round(time.monotonic() - watcher.last_poll, 3)
        return Info(model=self.model, fingerprint=self.fingerprint,
                    champion=state.champion.version if state.champion else None,
                    challenger=state.challenger.version if state.challenger else None, weight=state.weight,
                    registry_reachable=watcher.reachable, last_error=watcher.last_error, seconds_since_poll=age)
