"""Serving for a workload that ranks rather than scores: `POST /<endpoint>` and `/<endpoint>/batch`.

A workload opts in by declaring (the recommender is the worked example):

- `endpoint`: the path under the route (`"recommend"`), and `request_model` / `response_model`: what one
  request holds and what one answer holds; `routing_key`: the request field the canary split is sticky on.
- `model_inputs(rows) -> tuple of arrays`: the registered model's forward arguments for a batch of requests.
- `answers(outputs, rows) -> (answers, distribution)`: one `response_model`-shaped dict per request from the
  model's outputs (numpy arrays), and one value in [0, 1] per answer that describes it (the recommender: the
  mean popularity percentile of the items returned).

The router then does what it does for a scoring workload: one registry state per batch, the sticky split,
champion and challenger in-process, a failing challenger's rows answered by the champion, the request counter
and latency per variant, and the `distribution` values recorded in the score buckets, so the canary controller's
error, latency and PSI checks judge a ranking challenger unchanged (PSI of the two versions' answers). A ranking
answer has no decision: the positive counter stays at 0. Feature drift and fault injection are the scoring
path's; a ranking workload declares no feature columns to watch.

A workload that also declares `feedback_model` and `answered_items` (ferry.serving.feedback) gets, with a
prediction log configured, `POST /<endpoint>/feedback` (what users did with the answers: the recommender's
clicks), every answer logged with the items it listed, and, while a rollout mirrors requests, the other model's
list for the same request: what the canary's judgement on feedback pairs (ferry.steps.feedback).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import pydantic_core
from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, conlist, create_model

import ferry
from ferry.serving import metrics
from ferry.serving.api import ERRORS, NO_TELEMETRY, Answer, guarded, probe_routes
from ferry.serving.feedback import RankingLog, RankingShadow, new_request_ids, takes_feedback
from ferry.serving.intake import InFlight, Intake
from ferry.serving.prediction_log import LogLimits
from ferry.serving.routing import CHALLENGER, CHAMPION, Variant, challenger_rows
from ferry.serving.schemas import Info, error_body
from ferry.serving.service import NoChampion, answered_by, served_info
from ferry.serving.watcher import Loaded, RegistryWatcher, RolloutState
from ferry.spec.models import ServingSpec

RANKING_HOOKS = ("endpoint", "model_inputs", "answers", "response_model")


def ranks(workload: Any) -> bool:
    """Whether the workload's requests are answered by `answers` (ranking) rather than scored."""
    return all(hasattr(workload, name) for name in RANKING_HOOKS)


class RankingService:
    """Ranking without Ray (the Serve deployment wraps it; unit tests drive it with plain torch modules)."""

    drift = quality = online = faults = None  # the scoring path's monitors: none here

    def __init__(self, model: str, workload: Any, watcher: RegistryWatcher, recorder: metrics.Recorder,
                 fingerprint: str = "", log: RankingLog | None = None) -> None:
        self.model, self.workload, self.watcher = model, workload, watcher
        self.recorder, self.fingerprint = recorder, fingerprint
        self.routing_key: str | None = getattr(workload, "routing_key", None)
        self.log = log  # answers, shadow lists and feedback (a feedback workload with a prediction log)
        self.shadow = None if log is None else RankingShadow(log, self.items_of)

    def items_of(self, model: Loaded, rows: list[BaseModel]) -> list[list[int]]:
        """The items `model` lists for each request (what the shadow worker logs)."""
        answered, _ = self.workload.answers(run_ranking(model.module, self.workload, rows), rows)
        return [list(self.workload.answered_items(answer)) for answer in answered]

    def ready(self) -> bool:
        return self.watcher.state.champion is not None

    def rank(self, rows: Sequence[BaseModel]) -> tuple[list[dict[str, Any]], set[tuple[str, Variant]]]:
        """One answer per request, in order, each with the model, version and variant that gave it; and the
        (version, variant) pairs that answered (the latency labels)."""
        state = self.watcher.state
        if state.champion is None:
            raise NoChampion(f"no champion of {self.model} is loaded yet")
        keys = [getattr(row, self.routing_key) for row in rows] if self.routing_key else None
        to_challenger = challenger_rows(keys, len(rows), state.weight, state.challenger is not None)
        answers: list[dict[str, Any]] = [{} for _ in rows]
        served: set[tuple[str, Variant]] = set()
        for variant, chosen in ((CHAMPION, ~to_challenger), (CHALLENGER, to_challenger)):
            index = np.flatnonzero(chosen).tolist()
            if index:
                group = [rows[i] for i in index]
                loaded, served_as, answered = self._answer_group(state, variant, group)
                served.add((loaded.version, served_as))
                for i, answer in zip(index, answered, strict=True):
                    answers[i] = {**answer, "model": self.model, "version": loaded.version, "variant": served_as}
        if self.log is not None:
            self._log_answers(state, rows, answers)
        return answers, served

    def _log_answers(self, state: RolloutState, rows: Sequence[BaseModel], answers: list[dict[str, Any]]) -> None:
        assert self.log is not None and self.shadow is not None
        request_ids = new_request_ids(len(rows))
        versions = [answer["version"] for answer in answers]
        self.log.answered(rows, request_ids, [self.workload.answered_items(answer) for answer in answers], versions,
                          [answer["variant"] for answer in answers], time.time())
        self.shadow.offer(state, np.asarray(versions), rows, request_ids)

    def record_feedback(self, rows: Sequence[BaseModel]) -> int:
        """Log feedback as it arrived; the number of rows kept."""
        if self.log is None:
            raise NoFeedbackLog(f"{self.model} keeps no log of its answers here, so feedback has nowhere to go "
                                "(serving needs a prediction log: `ferry up` configures one)")
        self.log.clicked(rows, time.time())
        return len(rows)

    def _answer_group(self, state: RolloutState, variant: Variant,
                      rows: list[BaseModel]) -> tuple[Loaded, Variant, list[dict[str, Any]]]:
        loaded, served_as, (answered, distribution) = answered_by(
            state, variant, len(rows), self.recorder,
            lambda model: self.workload.answers(run_ranking(model.module, self.workload, rows), rows))
        self.recorder.request(metrics.OK, loaded.version, served_as, len(rows))
        self.recorder.scores(loaded.version, served_as, np.clip(np.asarray(distribution, dtype=np.float64), 0, 1), 0)
        return loaded, served_as, answered

    def info(self) -> Info:
        return served_info(self.model, self.fingerprint, self.watcher,
                           None if self.log is None else self.log.dropped_rows)


class NoFeedbackLog(Exception):
    """Feedback posted to a router without a log (answered 503)."""


def ranking_log(model: str, workload: Any, log: Any) -> RankingLog | None:
    """The router's log of answers and feedback (`log`: PredictionLogArgs); None without one, or when the workload
    declares no feedback."""
    if log is None or not takes_feedback(workload):
        return None
    return RankingLog(log.uri, model, workload.request_model, workload.feedback_model,
                      LogLimits(flush_interval_s=log.flush_interval_s))


def run_ranking(module: Any, workload: Any, rows: Sequence[BaseModel]) -> tuple[np.ndarray, ...]:
    """The registered program's outputs for a batch of requests, as numpy arrays."""
    import torch

    with torch.inference_mode():
        out = module(*(torch.from_numpy(part) for part in workload.model_inputs(rows)))
    parts = out if isinstance(out, tuple | list) else (out,)
    arrays = tuple(part.detach().cpu().numpy() for part in parts)
    if any(part.shape[0] != len(rows) for part in arrays):
        raise ValueError(f"model returned {[p.shape[0] for p in arrays]} rows for {len(rows)} requests")
    return arrays


def served_model(workload: Any) -> type[BaseModel]:
    """The answer as the API returns it: the workload's response plus who answered."""
    return create_model(f"Served{workload.response_model.__name__}", __base__=workload.response_model,
                        model=(str, ...), version=(str, ...), variant=(str, ...))


def build_ranking_api(service: RankingService, serving: ServingSpec, in_flight: InFlight | None = None) -> FastAPI:
    """The router's HTTP API for a ranking workload: the probes, `/<endpoint>` and `/<endpoint>/batch`."""
    limits = serving.limits
    app = FastAPI(title=f"ferry · {service.model}", version=ferry.__version__, telemetry=NO_TELEMETRY,
                  description=f"Answers of {service.model}: champion and challenger split by "
                              f"`{service.routing_key}`, versions read from the MLflow registry.")
    app.add_middleware(Intake, max_body_bytes=limits.max_body_bytes, in_flight=in_flight,
                       on_reject=lambda status: service.recorder.request(metrics.CLIENT_ERROR, "", metrics.UNROUTED))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        service.recorder.request(metrics.CLIENT_ERROR, "", metrics.UNROUTED)
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})  # no `input`: as the scoring API

    app.add_exception_handler(RequestValidationError, invalid)
    probe_routes(app, service)
    _ranking_routes(app, service, limits.max_batch_rows, limits.timeout_s)
    return app


def _ranking_routes(app: FastAPI, service: RankingService, max_rows: int, timeout_s: float) -> None:
    workload = service.workload
    served = served_model(workload)
    batch_answer = create_model(f"Batch{served.__name__}", answers=(list[served], ...))  # type: ignore[valid-type]

    async def answer(rows: list[BaseModel], single: bool) -> Any:
        async def call() -> Answer:
            answers, by = service.rank(rows)
            body = answers[0] if single else {"answers": answers}
            return Response(pydantic_core.to_json(body), media_type="application/json"), by

        return await guarded(service, timeout_s, call)

    async def one(body: Any) -> Any:
        return await answer([body], single=True)

    async def batch(body: Any) -> Any:
        return await answer(body, single=False)

    one.__annotations__ = {"body": Annotated[workload.request_model, Body()]}
    batch.__annotations__ = {"body": Annotated[conlist(workload.request_model, min_length=1, max_length=max_rows),
                                               Body()]}
    path = f"/{workload.endpoint.strip('/')}"
    app.post(path, response_model=served, tags=[workload.endpoint], responses=ERRORS)(one)
    app.post(f"{path}/batch", response_model=batch_answer, tags=[workload.endpoint], responses=ERRORS)(batch)
    if takes_feedback(workload):
        _feedback_route(app, service, path, max_rows)


class FeedbackReport(BaseModel):
    stored: int


def _feedback_route(app: FastAPI, service: RankingService, path: str, max_rows: int) -> None:
    workload = service.workload

    async def feedback(body: Any) -> Any:
        try:
            stored = service.record_feedback(body)
        except NoFeedbackLog as exc:
            return JSONResponse(status_code=503, content=error_body(str(exc)))
        return FeedbackReport(stored=stored)

    feedback.__annotations__ = {"body": Annotated[conlist(workload.feedback_model, min_length=1, max_length=max_rows),
                                                  Body()]}
    app.post(f"{path}/feedback", response_model=FeedbackReport, tags=["feedback"],
             responses={503: {"description": "No log to keep feedback in"}})(feedback)
