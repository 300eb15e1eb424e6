"""ferry's local Alertmanager webhook receiver: records alerts, exports pipeline-run counts, retrains on drift.

`ferry up` runs it as the service `receiver` (`python -m ferry.local.alerts.receiver`, 127.0.0.1:<receiver_port>);
the local Alertmanager sends every route to `POST /alerts` (ferry.render.alerting.local_config).

- `POST /alerts` takes Alertmanager's webhook payload (version "4", as documented for webhook_config),
  answers 422 naming the field when it is not one, and records every alert in `.ferry/alerts/alerts.db`
  (ferry.local.alerts.store), which `ferry alerts` reads.
- A firing `FerryModelDriftHigh` with a `model` label starts a retraining run of that model through the local
  runner (ferry.local.alerts.retrain.start_retraining) in a background thread, so Alertmanager gets its answer at
  once. At most one per model at a time, and one per alert instance: Alertmanager repeats a notification
  (repeat_interval, a new feature joining the group), and that must not train again. Each decision is
  recorded against the alerts that caused it.
- `GET /metrics`: the pipeline-run counter (`ferry.contract.metrics.PIPELINE_RUNS`), counted from the runner's
  run records under `.ferry/runs` (each finished run once, remembered in the store, so the counter never goes
  down when a failed run is resumed), and the receiver's own counters. Prometheus scrapes it (job
  `ferry-receiver`).
- `GET /-/ready` for `ferry up`'s readiness probe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ferry.contract import metrics as m
from ferry.contract import names
from ferry.local.alerts.store import ZERO_TIME, AlertStore, Incoming
from ferry.local.engine.state import list_runs
from ferry.local.errors import LocalError
from ferry.settings import Settings

log = logging.getLogger("ferry.receiver")

MAX_BODY_BYTES = 4 * 1024 * 1024
Retrain = Callable[..., Any]  # ferry.local.alerts.retrain.start_retraining's signature


# --- the webhook payload (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config) ----

class WebhookAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")  # newer Alertmanagers may add fields; all we need is checked

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: Annotated[str, Field(min_length=1, max_length=64)]

    @field_validator("labels")
    @classmethod
    def _named(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname"):
            raise ValueError("an alert needs the label `alertname`")
        return labels

    def incoming(self) -> Incoming:
        ends = _stamp(self.endsAt) if self.endsAt is not None else None
        return Incoming(fingerprint=self.fingerprint, status=self.status, labels=dict(self.labels),
                        annotations=dict(self.annotations), starts_at=_stamp(self.startsAt),
                        ends_at=None if ends in (None, ZERO_TIME) else ends, generator_url=self.generatorURL)


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    groupKey: str
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: Annotated[list[WebhookAlert], Field(min_length=1)]


def _stamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.year <= 1:
        return ZERO_TIME
    moment = moment.astimezone(UTC)
    millis = f".{moment.microsecond // 1000:03d}" if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + millis + "Z"  # what `ferry alerts` shows, and the key


# --- metrics -------------------------------------------------------------------------------------------

class ReceiverMetrics:
    """A registry of its own: the receiver's counters and the pipeline-run counter collected from disk."""

    def __init__(self, settings: Settings, store: AlertStore) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry()

        def counter(metric: m.Metric) -> Counter:
            return Counter(metric.name, metric.help, metric.label_names, registry=self.registry)

        self.notifications = counter(m.ALERT_NOTIFICATIONS)
        self.alerts = counter(m.ALERTS_RECEIVED)
        self.triggers = counter(m.RETRAINING_TRIGGERS)
        self.registry.register(PipelineRunsCollector(settings, store))

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class PipelineRunsCollector:
    """The pipeline-run counter (`{model,phase}`) from `.ferry/runs`, read on every scrape.

    Every model with a run has all three phases exported (0 until one happens), so a first failure is an
    increase Prometheus sees, not a new series."""

    def __init__(self, settings: Settings, store: AlertStore) -> None:
        self.settings, self.store = settings, store

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        runs = list_runs(self.settings)
        self.store.note_completions((r["name"], r["finishedAt"], r["model"], r["phase"]) for r in runs
                                    if r["phase"] in m.RUN_PHASES and r["finishedAt"] and r["model"])
        counts = self.store.completion_counts()
        runs_metric = m.PIPELINE_RUNS
        family = CounterMetricFamily(runs_metric.name, runs_metric.help, labels=runs_metric.label_names)
        for model in sorted({name for name, _ in counts} | {r["model"] for r in runs if r["model"]}):
            for phase in m.RUN_PHASES:
                family.add_metric([model, phase], float(counts.get((model, phase), 0)))
        yield family

    def describe(self) -> list[Any]:
        return []  # collected on demand: registering must not read the disk


# --- drift -> retraining ---------------------------------------------------------------------------------

class Retrainer:
    """Starts at most one retraining per model, in a background thread, and records each decision."""

    def __init__(self, settings: Settings, store: AlertStore, metrics: ReceiverMetrics, retrain: Retrain) -> None:
        self.settings, self.store, self.metrics, self.retrain = settings, store, metrics, retrain
        self.lock = threading.Lock()
        self.active: dict[str, str] = {}  # model -> workflow ("" while it is being prepared)
        # Runs a previous receiver process was running died with it (daemon threads): say so in `ferry alerts`.
        store.interrupt_unfinished("the receiver stopped while this ran; `ferry submit MODEL --retrain` starts "
                                   "another")

    def consider(self, payload: WebhookPayload) -> list[dict[str, str]]:
        """The firing drift alerts of a notification, per model: start, or say why not."""
        by_model: dict[str, list[Incoming]] = {}
        for alert in payload.alerts:
            model = alert.labels.get("model", "")
            if alert.status == "firing" and alert.labels.get("alertname") == names.ALERT_DRIFT_HIGH and model:
                by_model.setdefault(model, []).append(alert.incoming())
        return [self._one(model, alerts) for model, alerts in sorted(by_model.items())]

    def _one(self, model: str, alerts: list[Incoming]) -> dict[str, str]:
        earlier = self.store.retrained_for(alerts)
        with self.lock:
            running = self.active.get(model)
            if running is None and earlier is None:
                self.active[model] = ""
        if earlier is not None or running is not None:
            why = (f"retraining run {running or '(starting)'} of {model} is active" if running is not None
                   else f"run {earlier} was already started for this alert")
            return self._decided(model, alerts, m.RETRAIN_SKIPPED, why)
        ids = self.store.add_trigger(model, alerts, "starting", message="drift alert received")
        # A daemon thread, not an executor: `ferry down` must not wait for a training to finish. The run's state
        # stays resumable (ferry.local.engine.runner), and the step processes die with the receiver's process tree.
        threading.Thread(target=self._run, args=(model, alerts, ids), name=f"ferry-retrain-{model}",
                         daemon=True).start()
        return {"model": model, "result": "starting"}

    def _decided(self, model: str, alerts: list[Incoming], result: str, message: str) -> dict[str, str]:
        self.store.add_trigger(model, alerts, result, message=message)
        self.metrics.triggers.labels(model, result).inc()
        log.info("retraining of %s %s: %s", model, result, message)
        return {"model": model, "result": result, "message": message}

    def _run(self, model: str, alerts: list[Incoming], ids: list[int]) -> None:
        from ferry.local.alerts.retrain import RetrainingBusy

        features = ", ".join(sorted({a.labels.get("feature", "?") for a in alerts}))
        reason = f"{names.ALERT_DRIFT_HIGH} firing for {model} (feature {features}) since {alerts[0].starts_at}"

        def started(workflow: str) -> None:
            with self.lock:
                self.active[model] = workflow
            self.store.update_triggers(ids, result=m.RETRAIN_STARTED, workflow=workflow, phase="Running",
                                       message=reason)
            self.metrics.triggers.labels(model, m.RETRAIN_STARTED).inc()
            log.info("retraining of %s started: %s (%s)", model, workflow, reason)

        try:
            result = self.retrain(self.settings, model, reason, trigger=names.TRIGGER_DRIFT, on_started=started)
            self.store.update_triggers(ids, phase=result.phase, message=result.message or reason)
        except RetrainingBusy as exc:
            self.store.update_triggers(ids, result=m.RETRAIN_SKIPPED, message=str(exc))
            self.metrics.triggers.labels(model, m.RETRAIN_SKIPPED).inc()
        except Exception as exc:  # the receiver keeps serving whatever a run does; the record says why
            log.exception("retraining of %s failed", model)
            self.store.update_triggers(ids, result=m.RETRAIN_FAILED, message=f"{type(exc).__name__}: {exc}")
            self.metrics.triggers.labels(model, m.RETRAIN_FAILED).inc()
        finally:
            with self.lock:
                self.active.pop(model, None)

# --- the app -----------------------------------------------------------------------------------------------

def build_app(settings: Settings, retrain: Retrain | None = None) -> Any:
    """The FastAPI app; `retrain` defaults to ferry.local.alerts.retrain.start_retraining (tests pass their own)."""
    from fastapi import FastAPI, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    if retrain is None:
        from ferry.local.alerts.retrain import start_retraining

        retrain = start_retraining
    store = AlertStore.open(settings)
    metrics = ReceiverMetrics(settings, store)
    retrainer = Retrainer(settings, store, metrics, retrain)
    app = FastAPI(title="ferry alert receiver", docs_url=None, redoc_url=None)
    app.state.store, app.state.retrainer, app.state.metrics = store, retrainer, metrics

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Any]) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            metrics.notifications.labels(m.NOTIFICATION_REJECTED).inc()
            return JSONResponse({"detail": f"body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def rejected(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.notifications.labels(m.NOTIFICATION_REJECTED).inc()
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors),
                             "hint": "send Alertmanager's webhook payload (version \"4\")"}, status_code=422)

    @app.post("/alerts")
    def receive(payload: WebhookPayload) -> dict[str, Any]:
        recorded = store.record((a.incoming() for a in payload.alerts), payload.receiver)
        for alert in payload.alerts:
            metrics.alerts.labels(alert.labels["alertname"], alert.status).inc()
        metrics.notifications.labels(m.NOTIFICATION_ACCEPTED).inc()
        return {"recorded": recorded, "retraining": retrainer.consider(payload)}

    @app.get("/alerts")
    def recorded(model: str | None = None, firing: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        return [a.as_json() for a in store.alerts(model=model, firing=firing, limit=min(max(limit, 1), 1000))]

    @app.get("/metrics")
    def scrape() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/-/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    """`python -m ferry.local.alerts.receiver`: serve on the settings' host and receiver port (FERRY_* variables)."""
    import uvicorn

    from ferry.settings import load_settings

    settings = load_settings()
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        raise LocalError(f"the receiver binds loopback only, not {settings.host!r}: unset FERRY_HOST or set it "
                         "to 127.0.0.1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(build_app(settings), host=settings.host, port=settings.receiver_port, log_level="info",
                access_log=True, proxy_headers=False, server_header=False)


if __name__ == "__main__":
    main()
