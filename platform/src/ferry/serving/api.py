"""The router's HTTP API, built per workload at replica start (the request model is only known then).

For a workload that takes raw requests (ferry.serving.online: `raw_request_model`, fraud_detection's payments):

    POST /predict                 one raw request                     → Prediction
    POST /predict/batch           a JSON list of them (1..max rows)    → {"predictions": [...]}
    POST /predict/features        one request_model object (the model's features, computed by the caller)
    POST /predict/features/batch  a JSON list of them
    POST /labels                  a JSON list of label_model objects   → {"stored", "repeated", ...}

For any other workload `/predict` and `/predict/batch` take the request_model, as the features routes do.
Every raw request scored and every label is appended to the prediction log when one is configured
(ferry.serving.prediction_log.ServingLog).

    GET  /healthz        alive                              GET /readyz  200 once a champion is loaded, else 503
    GET  /info           what is served (versions, weight, registry reachability, config fingerprint)
    GET  /docs, /openapi.json

Paths are relative to the application's route prefix. A clean scoring request (a JSON body that validates,
features or raw) is answered by the fast lane (`fast_lane`): the same scoring and error handling as the routes
below, without FastAPI's per-request routing, dependency solving and response re-validation; a body that does
not validate goes on to the routes, so every 422 comes from FastAPI. Client errors never become 5xx: a bad
payload gets 422 naming the field (`loc`; for a batch the row too: FastAPI for single requests, `columns.BatchReader`
for batches, which validates column-wise and falls back to pydantic for the exact errors), `Intake`
answers an oversized body with 413 before any parsing. Validation errors leave out the offending `input`
FastAPI would echo: request bodies carry card data that should not travel into client logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, TypeAdapter, ValidationError, conlist

import ferry
from ferry.contract.errors import RequestInFlight, StateStoreUnavailable
from ferry.serving import metrics
from ferry.serving.columns import BatchReader, openapi_body
from ferry.serving.faults import InjectedFault, settle_batch
from ferry.serving.intake import ASGIApp, FastLane, InFlight, Intake, Scope
from ferry.serving.prediction_log import ServingLog
from ferry.serving.schemas import BatchPredictions, Health, Info, LabelsReport, Prediction, error_body
from ferry.serving.service import NoChampion, Scored, ScoringFailed, ScoringService
from ferry.serving.watcher import LOGGER_NAME, RegistryWatcher
from ferry.spec.models import ServingSpec

logger = logging.getLogger(LOGGER_NAME)
ScoreOne = Callable[[BaseModel], Awaitable[Prediction]]


class Router(Protocol):
    """What the probes and the request guard need of a service: its metrics and what it serves (the scoring
    service here, `ranking.RankingService` for a ranking workload)."""

    recorder: metrics.Recorder
    watcher: RegistryWatcher

    def info(self) -> Info: ...
NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
ERRORS: dict[int | str, dict[str, Any]] = {413: {"description": "Body over serving.limits.max_body_bytes"},
          503: {"description": "No champion loaded yet"}, 504: {"description": "Over serving.limits.timeout_s"}}


def build_api(service: ScoringService, score_one: ScoreOne, serving: ServingSpec,
              in_flight: InFlight | None = None) -> FastAPI:
    # FastAPI's native OpenTelemetry is off: nothing here configures a provider for it to export to (Ray
    # exports the router's metrics), and its per-request provider lookups cost ~5 µs of a ~115 µs request.
    app = FastAPI(title=f"ferry · {service.model}", version=ferry.__version__, telemetry=NO_TELEMETRY,
                  description=f"Scores for {service.model}: champion and challenger split by "
                              f"`{service.workload.routing_key}`, versions read from the MLflow registry.")
    in_flight = in_flight or InFlight()
    scoring = Scoring(service, score_one, serving, in_flight)
    app.add_middleware(Intake, max_body_bytes=serving.limits.max_body_bytes, in_flight=in_flight,
                       on_reject=lambda status: service.recorder.request(metrics.CLIENT_ERROR, "", metrics.UNROUTED),
                       fast_lane=fast_lane(scoring))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        service.recorder.request(metrics.CLIENT_ERROR, "", metrics.UNROUTED)
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})

    app.add_exception_handler(RequestValidationError, invalid)
    probe_routes(app, service)
    _predict_routes(app, scoring)
    if service.workload.raw_request_model is not None:
        _raw_routes(app, scoring)
    return app


def features_path(service: ScoringService) -> str:
    """Where the model's own features are posted: `/predict` itself unless `/predict` takes raw requests."""
    return "/predict/features" if service.workload.raw_request_model is not None else "/predict"


def probe_routes(app: FastAPI, service: Router) -> None:
    @app.get("/healthz", response_model=Health, tags=["probes"])
    async def healthz() -> Health:
        return Health(status="alive")

    @app.get("/readyz", response_model=Health, tags=["probes"], responses={503: {"model": Health}})
    async def readyz() -> Any:
        info = service.info()
        if info.champion is None:
            service.watcher.wake()
            return JSONResponse(status_code=503, content=Health(status="not ready", detail=(
                f"no champion loaded; registry reachable: {info.registry_reachable}")).model_dump())
        return Health(status="ready", detail=f"champion {info.champion}")

    @app.get("/info", response_model=Info, tags=["probes"])
    async def info() -> Info:
        return service.info()


class Scoring:
    """What both predict routes do once their body is valid, shared by the FastAPI routes and the fast lane."""

    def __init__(self, service: ScoringService, score_one: ScoreOne, serving: ServingSpec,
                 in_flight: InFlight | None = None) -> None:
        workload, self.limits = service.workload, serving.limits
        self.service, self.score_one = service, score_one
        self.in_flight = in_flight or InFlight()
        self.store_answering = True  # the feature state store's last round trip succeeded (`_observe`)
        self.reader = BatchReader(workload.request_model, workload.feature_names, workload.routing_key,
                                  self.limits.max_batch_rows)
        self.row: TypeAdapter[BaseModel] = TypeAdapter(workload.request_model)
        raw = workload.raw_request_model
        self.raw_row: TypeAdapter[Any] | None = None if raw is None else TypeAdapter(raw)
        self.raw_rows: TypeAdapter[Any] | None = None if raw is None else TypeAdapter(
            conlist(raw, min_length=1, max_length=self.limits.max_batch_rows))

    async def one(self, row: BaseModel) -> Any:
        async def call() -> Answer:
            prediction = await self.score_one(row)
            return prediction, {(prediction.version, prediction.variant)}

        return await guarded(self.service, self.limits.timeout_s, call)

    async def batch(self, body: bytes) -> Any:
        # Read and validated column-wise (ferry.serving.columns), not as one model per row, and answered
        # straight in JSON: already a batch, scored in one pass per variant, no queue.
        batch = self.reader.read(body)

        async def call() -> Answer:
            scored = self.service.score_batch(batch.keys, batch.features)
            if self.service.faults is not None:
                await settle_batch(self.service.faults, set(scored.versions), scored.first_fault())
            return Response(scored.to_json(), media_type="application/json"), scored.served

        return await guarded(self.service, self.limits.timeout_s, call)

    async def raw(self, rows: list[BaseModel], single: bool) -> Any:
        """Raw requests: features from the feature state store (one round trip for the batch), then scored
        like any batch. A repeated transaction id gets the features it was first scored with."""
        async def call() -> Answer:
            online, observed = await _observe(self, rows)
            scored = self.service.score_batch(online.keys(rows), observed.features)
            if self.service.log is not None:
                _log_scored(self.service.log, rows, observed, scored)
            if self.service.shadow is not None:
                _offer_shadow(self.service, rows, observed, scored)
            if self.service.faults is not None:
                await settle_batch(self.service.faults, set(scored.versions), scored.first_fault())
            if single:
                [result] = scored.results()
                if isinstance(result, InjectedFault):
                    raise result
                return result, scored.served
            return Response(scored.to_json(), media_type="application/json"), scored.served

        return await guarded(self.service, self.limits.timeout_s, call)

    async def labels(self, rows: list[BaseModel]) -> Any:
        async def call() -> Answer:
            online = self.service.online
            if online is None:
                raise NoStateStore("this router has no feature state store to keep labels in")
            arrival_ns = time.time_ns()
            report = await asyncio.to_thread(online.record_labels, rows, arrival_ns)
            if self.service.log is not None:
                self.service.log.labelled(rows, arrival_ns / 1e9)
            return LabelsReport(stored=report.stored, repeated=report.repeated, corrected=report.corrected,
                                unmatched=list(report.unmatched)), ()

        return await guarded(self.service, self.limits.timeout_s, call)


def _log_scored(log: ServingLog, rows: list[BaseModel], observed: Any, scored: Scored) -> None:
    answered = scored.unfailed()
    if not answered.all():  # a row that drew an injected fault was not answered: nothing to log
        rows = [row for row, keep in zip(rows, answered.tolist(), strict=True) if keep]
    log.scored(rows, observed.features[answered], scored.answers(answered), observed.repeated[answered], time.time())


def _offer_shadow(service: ScoringService, rows: list[BaseModel], observed: Any, scored: Scored) -> None:
    """Mirror the answered first-time rows to the model that did not answer them (ferry.serving.shadow)."""
    state, log, shadow = service.watcher.state, service.log, service.shadow
    if state.challenger is None or state.shadow_sample <= 0 or log is None or shadow is None:
        return
    fresh = scored.unfailed() & ~np.asarray(observed.repeated, dtype=bool)
    index = np.flatnonzero(fresh).tolist()
    shadow.offer(state, scored.versions[fresh], [getattr(rows[i], log.key) for i in index],
                         [getattr(rows[i], log.event_time_field) for i in index], observed.features[fresh])


class NoStateStore(StateStoreUnavailable):
    """The workload takes raw requests but this router was deployed without a feature state store."""


async def _observe(scoring: Scoring, rows: list[BaseModel]) -> Any:
    online = scoring.service.online
    if online is None:
        raise NoStateStore("this router has no feature state store, so it cannot compute features from raw "
                           "requests: start Redis (`ferry up` does when redis-server is installed) or post the "
                           f"model's features to {features_path(scoring.service)}")
    try:
        if len(rows) == 1 and scoring.in_flight.count <= 1 and scoring.store_answering:
            # Alone in the replica, one payment's round trip (~0.3 ms) keeps no one waiting, and the hop to a
            # thread and back would add ~0.2 ms to it. Not while the store fails: a store that hangs would hold
            # the event loop for its socket timeout.
            observed = online.observe(rows)
        else:
            observed = await asyncio.to_thread(online.observe, rows)
    except StateStoreUnavailable:
        scoring.store_answering = False
        raise
    scoring.store_answering = True
    return online, observed


def fast_lane(scoring: Scoring) -> FastLane:
    """Intake's fast lane: POST of the model's features (`features_path` and its `/batch`) or of raw requests
    (`/predict` and `/predict/batch` of a workload that takes them) with a JSON body that validates. None (the
    routes decide) for anything else, so an invalid body gets FastAPI's own 422."""

    single = features_path(scoring.service)
    batch_path = f"{single}/batch"
    raw = scoring.raw_row is not None

    async def lane(scope: Scope, body: bytes) -> ASGIApp | None:
        path = route_path(scope)
        if not _is_json(scope):
            return None
        if path == batch_path:
            try:
                return await scoring.batch(body)
            except RequestValidationError:
                return None
        if path == single:
            return _answer(await scoring.one(row)) if (row := _valid(scoring.row, body)) is not None else None
        if raw and path in ("/predict", "/predict/batch"):
            adapter, one = (scoring.raw_row, True) if path == "/predict" else (scoring.raw_rows, False)
            rows = _valid(adapter, body)
            return None if rows is None else _answer(await scoring.raw([rows] if one else rows, single=one))
        return None

    return lane


def _valid(adapter: TypeAdapter[Any] | None, body: bytes) -> Any | None:
    assert adapter is not None
    try:
        return adapter.validate_json(body)
    except ValidationError:
        return None


def _answer(answer: Any) -> Response:
    return answer if isinstance(answer, Response) else Response(answer.model_dump_json(),
                                                                media_type="application/json")


def route_path(scope: Scope) -> str:
    """The path under the app's root (Serve's route prefix), as Starlette's router matches it."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and (path == root or path[len(root)] == "/"):
        return path[len(root):]
    return str(path)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json"
    return False


def _predict_routes(app: FastAPI, scoring: Scoring) -> None:
    workload, limits = scoring.service.workload, scoring.limits

    async def predict(body: Any) -> Any:
        return await scoring.one(body)

    async def predict_batch(request: Request) -> Any:
        return await scoring.batch(await request.body())

    # The body type exists only at runtime (the workload's model), so FastAPI is told through annotations;
    # the batch body is read raw, so its schema is given to OpenAPI by hand.
    path = features_path(scoring.service)
    predict.__annotations__ = {"body": Annotated[workload.request_model, Body()]}
    app.post(path, response_model=Prediction, tags=["predict"], responses=ERRORS)(predict)
    app.post(f"{path}/batch", response_model=BatchPredictions, tags=["predict"], responses=ERRORS,
             openapi_extra=openapi_body(workload.request_model, limits.max_batch_rows))(predict_batch)


def _raw_routes(app: FastAPI, scoring: Scoring) -> None:
    workload, limits = scoring.service.workload, scoring.limits
    assert workload.raw_request_model is not None and workload.label_model is not None
    rows = conlist(workload.raw_request_model, min_length=1, max_length=limits.max_batch_rows)
    labels = conlist(workload.label_model, min_length=1, max_length=limits.max_batch_rows)

    async def predict_raw(body: Any) -> Any:
        return await scoring.raw([body], single=True)

    async def predict_raw_batch(body: Any) -> Any:
        return await scoring.raw(body, single=False)

    async def post_labels(body: Any) -> Any:
        return await scoring.labels(body)

    predict_raw.__annotations__ = {"body": Annotated[workload.raw_request_model, Body()]}
    predict_raw_batch.__annotations__ = {"body": Annotated[rows, Body()]}
    post_labels.__annotations__ = {"body": Annotated[labels, Body()]}
    raw_errors = {**ERRORS, 409: {"description": "The same transaction_id is being scored right now: retry"},
                  503: {"description": "No champion loaded yet, or the feature state store is unavailable"}}
    app.post("/predict", response_model=Prediction, tags=["predict"], responses=raw_errors)(predict_raw)
    app.post("/predict/batch", response_model=BatchPredictions, tags=["predict"],
             responses=raw_errors)(predict_raw_batch)
    app.post("/labels", response_model=LabelsReport, tags=["labels"], responses=raw_errors)(post_labels)


Answer = tuple[Any, Iterable[tuple[str, str]]]  # the response, and the (version, variant) pairs that served it


async def guarded(service: Router, timeout_s: float, call: Callable[[], Awaitable[Answer]]) -> Any:
    """Run a scoring call with the request timeout, turning every failure into a JSON 5xx and a metric."""
    started = time.perf_counter()
    try:
        answer, served = await asyncio.wait_for(call(), timeout_s)
    except NoChampion as exc:
        return _server_error(service, 503, str(exc))
    except StateStoreUnavailable as exc:
        logger.warning("feature state store: %s", exc)
        return _server_error(service, 503, str(exc))
    except RequestInFlight as exc:
        service.recorder.request(metrics.CLIENT_ERROR, "", metrics.UNROUTED)
        return JSONResponse(status_code=409, content=error_body(str(exc)))
    except TimeoutError:
        return _server_error(service, 504, f"no answer within {timeout_s:g}s (serving.limits.timeout_s)")
    except InjectedFault as exc:  # fault injection (ferry.serving.faults): already counted as a server error
        return JSONResponse(status_code=500, content=error_body(str(exc)))
    except ScoringFailed as exc:
        logger.error("scoring failed: %s", exc, exc_info=exc.__cause__)
        return _server_error(service, 500, "the model failed to score this request; see the router log",
                             exc.version, exc.variant, exc.rows)
    except Exception:
        logger.exception("unexpected error while scoring")
        return _server_error(service, 500, "internal error while scoring; see the router log")
    elapsed_ms = (time.perf_counter() - started) * 1000
    for version, variant in served:
        service.recorder.latency(version, variant, elapsed_ms)
    return answer


def _server_error(service: Router, status: int, message: str, version: str = "",
                  variant: str = metrics.UNROUTED, rows: int = 1) -> JSONResponse:
    service.recorder.request(metrics.SERVER_ERROR, version, variant, rows)
    return JSONResponse(status_code=status, content=error_body(message))
