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
answer has no decision: the positive counter stays at 0. Feature drift, the prediction log and fault injection
are the scoring path's; a ranking workload declares no feature columns to watch.
"""

from __future__ import annotations

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
from ferry.serving.intake import InFlight, Intake
from ferry.serving.routing import CHALLENGER, CHAMPION, Variant, challenger_rows
from ferry.serving.schemas import Info
from ferry.serving.service import NoChampion, answered_by, served_info
from ferry.serving.watcher import Loaded, RegistryWatcher, RolloutState
from ferry.spec.models import ServingSpec

RANKING_HOOKS = ("endpoint", "model_inputs", "answers", "response_model")


def ranks(workload: Any) -> bool:
    """Whether the workload's requests are answered by `answers` (ranking) rather than scored."""
    return all(hasattr(workload, name) for name in RANKING_HOOKS)


class RankingService:
    """Ranking without Ray (the Serve deployment wraps it; unit tests drive it with plain torch modules)."""

    drift = quality = shadow = log = online = faults = None  # the scoring path's monitors: none here

    def __init__(self, model: str, workload: Any, watcher: RegistryWatcher, recorder: metrics.Recorder,
                 fingerprint: str = "") -> None:
        self.model, self.workload, self.watcher = model, workload, watcher
        self.recorder, self.fingerprint = recorder, fingerprint
        self.routing_key: str | None = getattr(workload, "routing_key", None)

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
        return answers, served

    def _answer_group(self, state: RolloutState, variant: Variant,
                      rows: list[BaseModel]) -> tuple[Loaded, Variant, list[dict[str, Any]]]:
        loaded, served_as, (answered, distribution) = answered_by(
            state, variant, len(rows), self.recorder,
            lambda model: self.workload.answers(run_ranking(model.module, self.workload, rows), rows))
        self.recorder.request(metrics.OK, loaded.version, served_as, len(rows))
        self.recorder.scores(loaded.version, served_as, np.clip(np.asarray(distribution, dtype=np.float64), 0, 1), 0)
        return loaded, served_as, answered

    def info(self) -> Info:
        return served_info(self.model, self.fingerprint, self.watcher)


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
