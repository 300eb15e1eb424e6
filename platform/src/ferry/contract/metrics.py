"""The metric catalogue: every metric ferry exports, and every metric its rules and dashboards read.

One entry per metric: its name as the exporter is given it and as Prometheus sees it (Ray's exporter adds
`ray_` to application metrics), its type, labels (with their values where ferry decides them), help text,
bucket boundaries, producer and status. The exporters (`ferry.serving.metrics`, `ferry.serving.drift`,
`ferry.rollout.metrics`, `ferry.local.alerts.receiver`), the rollout observer's queries, the alert rules
and dashboards (`ferry.render.alerts`, `ferry.render.dashboards`) and docs/reference/metrics.md
(`ferry.render.metrics_doc`) all take names from here; tests/unit/contract checks that no other module
spells one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from ferry.contract import names


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Status(StrEnum):
    PRODUCED = "produced"  # something exports it today
    PLANNED = "planned"  # rules or dashboards read it, but nothing exports it yet


class Exporter(StrEnum):
    """How a metric reaches Prometheus, which decides the name Prometheus sees."""

    RAY = "ray"  # ray.serve.metrics in a Serve replica: Ray's exporter prefixes `ray_`
    PROMETHEUS_CLIENT = "prometheus_client"  # a ferry process's own /metrics: the name as given
    EXTERNAL = "external"  # another project's exporter, or a Prometheus recording rule: the name as seen


EXPORT_PREFIX = {Exporter.RAY: "ray_", Exporter.PROMETHEUS_CLIENT: "", Exporter.EXTERNAL: ""}
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


@dataclass(frozen=True)
class Label:
    name: str
    values: tuple[str, ...] = ()  # the values ferry decides; empty when open (a model name, a version)
    note: str = ""  # what the values are, when they are not listed


@dataclass(frozen=True)
class Section:
    """A group of metrics with one producer and one status (a heading of the reference page)."""

    title: str
    producer: str
    status: Status
    exporter: Exporter
    status_note: str = ""  # said after the status in the heading


@dataclass(frozen=True)
class Metric:
    name: str  # as the exporter is given it
    kind: Kind
    section: Section
    labels: tuple[Label, ...]
    help: str  # the exporter's HELP text; for other projects' metrics, what they are
    doc: str = ""  # what the reference page says it means, when it says more than the help text
    labels_note: str = ""  # labels the exporter adds, that ferry does not declare
    used_by: str = ""  # the rules and dashboards that read it; empty: exported, not used yet
    boundaries: tuple[float, ...] = ()  # histogram buckets ferry chooses (and counters per `le`)
    kind_note: str = ""
    windowed: bool = False  # a recording rule per window: the series is `series + window`, e.g. ...rate5m

    @property
    def series(self) -> str:
        """The name Prometheus sees (for a histogram, the base of its `_bucket`, `_count` and `_sum`)."""
        return EXPORT_PREFIX[self.section.exporter] + self.name

    @property
    def bucket(self) -> str:
        return self._histogram_series("_bucket")

    @property
    def count(self) -> str:
        return self._histogram_series("_count")

    def _histogram_series(self, suffix: str) -> str:
        if self.kind is not Kind.HISTOGRAM:
            raise ValueError(f"{self.series} is a {self.kind}, not a histogram: it has no {suffix} series")
        return self.series + suffix

    def at(self, window: str) -> str:
        """A windowed recording rule's series for one window."""
        if not self.windowed:
            raise ValueError(f"{self.series} is not recorded per window")
        return self.series + window

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    @property
    def producer(self) -> str:
        return self.section.producer

    @property
    def status(self) -> Status:
        return self.section.status


# --- label values ferry decides ------------------------------------------------------------------------
OUTCOME_OK, OUTCOME_CLIENT_ERROR, OUTCOME_SERVER_ERROR = "ok", "client_error", "server_error"
VARIANT_UNROUTED = "none"  # a request rejected before it was routed to a variant
VARIANTS = (names.ALIAS_CHAMPION, names.ALIAS_CHALLENGER, VARIANT_UNROUTED)
VERDICT_PASS, VERDICT_FAIL, VERDICT_INCONCLUSIVE, VERDICT_STALE = "pass", "fail", "inconclusive", "stale"
VERDICTS = (VERDICT_PASS, VERDICT_FAIL, VERDICT_INCONCLUSIVE, VERDICT_STALE)
ACTION_ADVANCE, ACTION_HOLD, ACTION_PROMOTE, ACTION_ROLLBACK = "advance", "hold", "promote", "rollback"
ACTIONS = (ACTION_ADVANCE, ACTION_HOLD, ACTION_PROMOTE, ACTION_ROLLBACK)
FEATURE_SCORE = "score"  # the drift gauge's `feature` for the model's score
RUN_PHASES = ("Succeeded", "Failed", "Error")  # Argo's final workflow phases
FAILED_PHASES = "Failed|Error"  # as a PromQL regex: the final phases of a run that did not succeed
NOTIFICATION_ACCEPTED, NOTIFICATION_REJECTED = "accepted", "rejected"
RETRAIN_STARTED, RETRAIN_SKIPPED, RETRAIN_FAILED = "started", "skipped", "failed"

# --- scrape jobs and target labels (local prometheus.yml and the rendered PodMonitor) ---------------------
JOB_RAY = "ray"
JOB_ROLLOUT = "ferry-rollout"
ROLLOUT_METRICS_PORT = 9097  # where the rollout step serves its metrics (FERRY_ROLLOUT_METRICS_PORT's default)
METRICS_PORT_NAME = "metrics"  # the container port name PodMonitors and NetworkPolicies match
JOB_RECEIVER = "ferry-receiver"
JOB_MLFLOW = "mlflow"
TARGET_NODE_TYPE = "ray_node_type"  # head | worker, from the pod label ray.io/node-type
TARGET_MODEL = "ferry_model"  # from the pod label ferry.dev/model

LATENCY_BOUNDARIES_MS: tuple[float, ...] = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300,
                                            500, 1000, 2000, 5000, 10000)
# The score buckets' fixed boundaries are what the canary's PSI is computed over: never change them
# between versions. 0.05 ... 0.95; `+Inf` catches 1.0.
SCORE_BOUNDARIES: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(1, 20))
SCORE_LE = (*(f"{b:g}" for b in SCORE_BOUNDARIES), "+Inf")  # the `le` values, as Prometheus writes them

_MODEL, _VERSION = Label("model"), Label("version")
_VARIANT = Label("variant", VARIANTS)
_LE = Label("le")

SERVING = Section("ferry: serving", "ferry.serving.metrics", Status.PRODUCED, Exporter.RAY)
ROLLOUT = Section("ferry: rollout", "ferry.rollout.metrics", Status.PRODUCED, Exporter.PROMETHEUS_CLIENT)
DRIFT = Section("ferry: drift and model age", "ferry.serving.drift", Status.PRODUCED, Exporter.RAY)
QUALITY = Section("ferry: model quality", "ferry.serving.quality", Status.PRODUCED, Exporter.RAY)
LOCAL = Section("ferry: local runs and alerts", "ferry.local.alerts.receiver", Status.PRODUCED,
                Exporter.PROMETHEUS_CLIENT)
RECORDED = Section("ferry: recording rules", "ferry.render.alerts", Status.PRODUCED, Exporter.EXTERNAL,
                   " by Prometheus from ferry's rules")
RAY_SERVE = Section("Ray Serve", "Ray", Status.PRODUCED, Exporter.EXTERNAL, ", built in")
ARGO = Section("Argo Workflows", "the Argo Workflows controller", Status.PRODUCED, Exporter.EXTERNAL,
               " on a cluster")
PLATFORM = Section("Prometheus and Kubernetes", "Prometheus itself and kube-state-metrics", Status.PRODUCED,
                   Exporter.EXTERNAL)

# --- ferry: serving ---------------------------------------------------------------------------------------
SERVING_REQUESTS = Metric(
    "ferry_serving_requests_total", Kind.COUNTER, SERVING,
    (_MODEL, _VERSION, _VARIANT, Label("outcome", (OUTCOME_OK, OUTCOME_CLIENT_ERROR, OUTCOME_SERVER_ERROR))),
    "Scored rows and rejected requests by outcome.",
    doc="Scored rows; a rejected request counts once. `server_error` over all outcomes is the availability SLI.",
    used_by=f"error-budget recording rules, {names.ALERT_ERROR_BUDGET_BURN}; model dashboard")
SERVING_LATENCY = Metric(
    "ferry_serving_latency_ms", Kind.HISTOGRAM, SERVING, (_MODEL, _VERSION, _VARIANT),
    "Router time per HTTP request (ms).",
    doc="Router time per HTTP request, in ms. The latency SLI is read at `le = slo.latency_ms` (or the next"
        " boundary above); rules match `le` by regex (`100` and `100.0`), as exporters and Prometheus versions"
        " spell it differently.",
    used_by=f"latency recording rules, {names.ALERT_LATENCY_BUDGET_BURN}; model dashboard",
    boundaries=LATENCY_BOUNDARIES_MS)
SERVING_SCORE_BUCKETS = Metric(
    "ferry_serving_score_bucket_total", Kind.COUNTER, SERVING, (_MODEL, _VERSION, _VARIANT, _LE),
    "Scored rows whose score is at most le (cumulative).",
    doc="Scored rows whose score is at most `le`; `le` every 0.05 up to `+Inf`. A counter per bucket, not a Ray"
        " Histogram, so a batch costs ~20 updates instead of one per row; `histogram_quantile` and heatmaps read"
        " it like any `_bucket`. A bucket below every score seen yet has no series (Ray cannot add 0): read it as"
        " 0. The canary's score PSI is computed over these buckets.",
    used_by="model dashboard (score heatmap)", boundaries=SCORE_BOUNDARIES,
    kind_note="one per `le` (cumulative, like a histogram's `_bucket`)")
SERVING_POSITIVES = Metric(
    "ferry_serving_predicted_positive_total", Kind.COUNTER, SERVING, (_MODEL, _VERSION, _VARIANT),
    "Rows whose decision was positive.",
    doc="Rows whose decision was positive; over `requests_total{outcome=\"ok\"}` it is the positive rate.",
    used_by="model dashboard")

# --- ferry: rollout ---------------------------------------------------------------------------------------
ROLLOUT_CHECKS = Metric(
    "ferry_rollout_checks_total", Kind.COUNTER, ROLLOUT, (_MODEL, _VERSION, Label("verdict", VERDICTS)),
    "Canary checks by verdict.",
    doc="Canary checks by verdict (pass, fail, inconclusive, and stale: a look that found the previous check's"
        " data, never counted as a pass or failure).",
    used_by="model dashboard")
ROLLOUT_DECISIONS = Metric(
    "ferry_rollout_decisions_total", Kind.COUNTER, ROLLOUT,
    (_MODEL, _VERSION, Label("action", ACTIONS)),
    "Canary decisions by action.",
    doc="Every decision of the rollout controller. A person's `ferry rollout promote/abort` is a short CLI"
        " process nobody scrapes, so it exports no metric: it is recorded on the model version as tag"
        f" `{names.TAG_ROLLOUT_REASON}` (\"promoted by hand\" / \"aborted by hand\"), shown by"
        " `ferry rollout status`.",
    used_by=f"{names.ALERT_CANARY_ROLLED_BACK}; model dashboard")
ROLLOUT_WEIGHT = Metric("ferry_rollout_weight", Kind.GAUGE, ROLLOUT, (_MODEL, _VERSION),
                        "Challenger traffic weight (0-100).", doc="The challenger's traffic weight, 0-100.",
                        used_by="model dashboard")
ROLLOUT_ERROR_RATE_DELTA = Metric(
    "ferry_rollout_error_rate_delta", Kind.GAUGE, ROLLOUT, (_MODEL, _VERSION),
    "Challenger minus champion error rate.", doc="Challenger minus champion error rate at the last check.")
ROLLOUT_ERROR_P_VALUE = Metric(
    "ferry_rollout_error_p_value", Kind.GAUGE, ROLLOUT, (_MODEL, _VERSION), "p-value of the error-rate test.",
    doc="p-value of the error-rate comparison at the last check.")
ROLLOUT_ERROR_RATE_UPPER_BOUND = Metric(
    "ferry_rollout_error_rate_upper_bound", Kind.GAUGE, ROLLOUT, (_MODEL, _VERSION),
    "Upper confidence bound of challenger minus champion error rate (promotion needs it under"
    " max_error_rate_delta).",
    doc="Upper confidence bound (one-sided, at `significance`) of challenger minus champion error rate at the"
        " last check; promotion needs it under `max_error_rate_delta`.")
ROLLOUT_SCORE_PSI = Metric(
    "ferry_rollout_score_psi", Kind.GAUGE, ROLLOUT, (_MODEL, _VERSION),
    "PSI between the variants' score histograms in this step.",
    doc="PSI between the two variants' score histograms over the current step, at the last check.")
ROLLOUT_OUTCOME_DELTA = Metric(
    "ferry_rollout_outcome_delta", Kind.GAUGE, ROLLOUT,
    (_MODEL, _VERSION, Label("metric", note="a workload metric named in `rollout.outcomes.metrics`")),
    "Challenger minus champion on labelled, paired transactions.",
    doc="Challenger minus champion of a workload metric (e.g. average precision) on the labelled transactions"
        " both scored (one in answer, one in shadow) since the rollout began, at the last check.")
ROLLOUT_OUTCOME_LOWER_BOUND = Metric(
    "ferry_rollout_outcome_lower_bound", Kind.GAUGE, ROLLOUT,
    (_MODEL, _VERSION, Label("metric", note="a workload metric named in `rollout.outcomes.metrics`")),
    "Lower bound of challenger minus champion on labels (promotion needs it at or above -margin).",
    doc="Lower paired-bootstrap bound (one-sided, at `rollout.outcomes.confidence`) of challenger minus champion"
        " on labelled transactions at the last check; promotion needs it at or above `-margin`, and an upper"
        " bound below `-margin` rolls back.")
ROLLOUT_LABELLED = Metric(
    "ferry_rollout_labelled_transactions", Kind.GAUGE, ROLLOUT, (_MODEL, _VERSION),
    "Labelled transactions both models scored since the rollout began.",
    doc="Labelled transactions both models scored since the rollout began, at the last check (the judgement"
        " on outcomes holds below `rollout.outcomes.min_labelled`).")

# --- ferry: model quality ---------------------------------------------------------------------------------
MODEL_QUALITY = Metric(
    "ferry_model_quality", Kind.GAUGE, QUALITY,
    (_MODEL, _VERSION, _VARIANT, Label("metric", note="a metric of the spec's `evaluation.gates`")),
    "A workload metric of served, labelled traffic.",
    doc="The workload's metric (each of the spec's `evaluation.gates`, e.g. average precision) of what each"
        " version and variant answered in the last 24 h of serving time, on the transactions whose labels came"
        " back (`/labels`), measured by the router every minute from the prediction log; published only with"
        " enough labelled positives to mean something.",
    used_by=names.ALERT_QUALITY_LOW)

# --- ferry: drift and model age ---------------------------------------------------------------------------
DRIFT_PSI = Metric(
    "ferry_drift_psi", Kind.GAUGE, DRIFT,
    (_MODEL, Label("feature", note=f"an input feature, or `{FEATURE_SCORE}` for the champion's score")),
    "PSI of live traffic against the champion's training data.",
    doc="Population stability index of live traffic over `monitoring.drift_window` against the champion's"
        " training data: sum over bins of (live share - training share) x ln(live share / training share)."
        " 0.1 is a visible shift, 0.25 a large one.",
    used_by=f"{names.ALERT_DRIFT_HIGH}; model dashboard")
LAST_TRAINED = Metric(
    "ferry_model_last_trained_timestamp_seconds", Kind.GAUGE, DRIFT, (_MODEL,),
    "Unix time the champion's training finished.",
    doc=f"Unix time at which the serving champion's training finished (its `{names.TAG_TRAINED_AT}` version tag,"
        " set by `ferry step register` from the train step's run).",
    used_by=f"{names.ALERT_STALE}; model and pipelines dashboards")

# --- ferry: local runs and alerts -------------------------------------------------------------------------
PIPELINE_RUNS = Metric(
    "ferry_pipeline_runs_total", Kind.COUNTER, LOCAL, (_MODEL, Label("phase", RUN_PHASES, "Argo's final phases")),
    "Finished local pipeline runs, by model and final phase (ferry's local runner; Argo's own metric on a"
    " cluster).",
    doc="Local pipeline runs that ended in each phase: local mode's counterpart of Argo's"
        " `argo_workflows_workflowtemplate_triggered_total`.",
    used_by=f"{names.ALERT_PIPELINE_FAILED}; pipelines dashboard")
ALERT_NOTIFICATIONS = Metric(
    "ferry_alert_notifications_total", Kind.COUNTER, LOCAL,
    (Label("result", (NOTIFICATION_ACCEPTED, NOTIFICATION_REJECTED)),), "Webhook notifications by result.",
    doc="Webhook notifications the receiver got; `rejected` ones were not Alertmanager payloads (422) or too"
        " large (413).")
ALERTS_RECEIVED = Metric(
    "ferry_alerts_received_total", Kind.COUNTER, LOCAL, (Label("alertname"), Label("status", ("firing", "resolved"))),
    "Alerts received, by alert name and status.",
    doc="Alerts in accepted notifications (Alertmanager repeats a firing alert every `repeat_interval`).")
RETRAINING_TRIGGERS = Metric(
    "ferry_retraining_triggers_total", Kind.COUNTER, LOCAL,
    (_MODEL, Label("result", (RETRAIN_STARTED, RETRAIN_SKIPPED, RETRAIN_FAILED))),
    "Drift alerts that asked for a retraining run, by result: started, skipped (one is active or was started"
    " for this alert), failed (could not start).",
    doc=f"Firing {names.ALERT_DRIFT_HIGH} notifications that asked for a retraining run: started one, were"
        " skipped (a run of the model was active, or one was already started for the same alert), or could"
        " not start it.")

# --- ferry: recording rules -------------------------------------------------------------------------------
ERROR_RATIO = Metric(
    "model:ferry_serving_errors:ratio_rate", Kind.GAUGE, RECORDED, (_MODEL,),
    f"Share of requests with `outcome=\"{OUTCOME_SERVER_ERROR}\"` over the window.",
    used_by=f"{names.ALERT_ERROR_BUDGET_BURN}; model dashboard", windowed=True, kind_note="recorded")
SLOW_RATIO = Metric(
    "model:ferry_serving_slow_requests:ratio_rate", Kind.GAUGE, RECORDED, (_MODEL,),
    "Share of requests slower than the latency SLO's bucket over the window.",
    used_by=f"{names.ALERT_LATENCY_BUDGET_BURN}; model dashboard", windowed=True, kind_note="recorded")

# --- Ray Serve (built in) ---------------------------------------------------------------------------------
_APPLICATION, _DEPLOYMENT = Label("application"), Label("deployment")
_ROUTE, _METHOD = Label("route"), Label("method")
SERVE_REPLICA_HEALTHY = Metric(
    "ray_serve_deployment_replica_healthy", Kind.GAUGE, RAY_SERVE, (_APPLICATION, _DEPLOYMENT, Label("replica")),
    "1 while a replica passes its health checks, 0 when it does not.",
    used_by=f"{names.ALERT_SERVE_REPLICAS_UNHEALTHY}; platform dashboard")
SERVE_TARGET_REPLICAS = Metric(
    "ray_serve_autoscaling_target_replicas", Kind.GAUGE, RAY_SERVE, (_APPLICATION, _DEPLOYMENT),
    "The replica count the Serve autoscaler aims for.", used_by="platform dashboard")
SERVE_HTTP_REQUESTS = Metric(
    "ray_serve_num_http_requests_total", Kind.COUNTER, RAY_SERVE,
    (_APPLICATION, _ROUTE, _METHOD, Label("status_code")), "Requests through the Serve HTTP proxies.",
    used_by="platform dashboard")
SERVE_HTTP_ERRORS = Metric(
    "ray_serve_num_http_error_requests_total", Kind.COUNTER, RAY_SERVE,
    (_APPLICATION, _ROUTE, _METHOD, Label("error_code")), "Errored responses of the proxies.",
    used_by="platform dashboard")
SERVE_HTTP_LATENCY = Metric(
    "ray_serve_http_request_latency_ms", Kind.HISTOGRAM, RAY_SERVE,
    (_APPLICATION, _ROUTE, _METHOD, Label("status_code")), "End-to-end latency at the proxies.",
    used_by="platform dashboard")

# --- Argo Workflows -------------------------------------------------------------------------------------
_TEMPLATE = (Label("name"), Label("namespace"), Label("cluster_scope"))
ARGO_TEMPLATE_RUNS = Metric(
    "argo_workflows_workflowtemplate_triggered_total", Kind.COUNTER, ARGO, (*_TEMPLATE, Label("phase")),
    f"Workflows of a template entering each phase. `phase=~\"{FAILED_PHASES}\"` counts failed runs.",
    used_by=f"{names.ALERT_PIPELINE_FAILED}; pipelines dashboard")
ARGO_TEMPLATE_RUNTIME = Metric(
    "argo_workflows_workflowtemplate_runtime", Kind.HISTOGRAM, ARGO, _TEMPLATE,
    "Time from Running to completion of a template's workflows, in seconds.", used_by="pipelines dashboard")
ARGO_WORKFLOWS_BY_PHASE = Metric(
    "argo_workflows_gauge", Kind.GAUGE, ARGO, (Label("phase"),), "Workflows the controller holds now, by phase.",
    used_by="pipelines dashboard")

# --- Prometheus and Kubernetes --------------------------------------------------------------------------
UP = Metric(
    "up", Kind.GAUGE, PLATFORM, (Label("job"), Label("instance")),
    f"1 if the last scrape of a target succeeded. `job=\"{JOB_RAY}\",{TARGET_NODE_TYPE}=\"head\"` is a Ray head;"
    f" `job=\"{JOB_MLFLOW}\"` is MLflow where it is scraped.",
    labels_note=f"plus target labels (`{TARGET_NODE_TYPE}`, `{TARGET_MODEL}`)",
    used_by=f"{names.ALERT_RAY_HEAD_DOWN}, {names.ALERT_MLFLOW_DOWN}; platform dashboard")
ALERTS = Metric(
    "ALERTS", Kind.GAUGE, PLATFORM, (Label("alertname"), Label("alertstate")),
    "Prometheus' own series of pending and firing alerts.", labels_note="and the alert's labels",
    used_by="platform dashboard")
KUBE_DEPLOYMENT_AVAILABLE = Metric(
    "kube_deployment_status_replicas_available", Kind.GAUGE, PLATFORM, (Label("namespace"), Label("deployment")),
    "Available replicas of a Deployment (kube-state-metrics). MLflow's is `ferry-system/mlflow`.",
    used_by=f"{names.ALERT_MLFLOW_DOWN}; platform dashboard")

CATALOGUE: tuple[Metric, ...] = (
    SERVING_REQUESTS, SERVING_LATENCY, SERVING_SCORE_BUCKETS, SERVING_POSITIVES,
    ROLLOUT_CHECKS, ROLLOUT_DECISIONS, ROLLOUT_WEIGHT, ROLLOUT_ERROR_RATE_DELTA, ROLLOUT_ERROR_P_VALUE,
    ROLLOUT_ERROR_RATE_UPPER_BOUND, ROLLOUT_SCORE_PSI, ROLLOUT_OUTCOME_DELTA, ROLLOUT_OUTCOME_LOWER_BOUND,
    ROLLOUT_LABELLED,
    MODEL_QUALITY,
    DRIFT_PSI, LAST_TRAINED,
    PIPELINE_RUNS, ALERT_NOTIFICATIONS, ALERTS_RECEIVED, RETRAINING_TRIGGERS,
    ERROR_RATIO, SLOW_RATIO,
    SERVE_REPLICA_HEALTHY, SERVE_TARGET_REPLICAS, SERVE_HTTP_REQUESTS, SERVE_HTTP_ERRORS, SERVE_HTTP_LATENCY,
    ARGO_TEMPLATE_RUNS, ARGO_TEMPLATE_RUNTIME, ARGO_WORKFLOWS_BY_PHASE,
    UP, ALERTS, KUBE_DEPLOYMENT_AVAILABLE,
)
SECTIONS: tuple[Section, ...] = tuple(dict.fromkeys(metric.section for metric in CATALOGUE))
_WINDOW = re.compile(r"\d+[smhdwy]")


def by_producer(producer: str) -> tuple[Metric, ...]:
    return tuple(metric for metric in CATALOGUE if metric.producer == producer)


def find(series: str) -> Metric | None:
    """The catalogued metric a series name Prometheus sees belongs to: the metric itself, a histogram's
    `_bucket`/`_count`/`_sum`, or a windowed recording rule's `<name><window>`."""
    for metric in CATALOGUE:
        if series == metric.series:
            return metric
        rest = series.removeprefix(metric.series)
        if rest == series:
            continue
        if (metric.kind is Kind.HISTOGRAM and rest in HISTOGRAM_SERIES) or (
                metric.windowed and _WINDOW.fullmatch(rest)):
            return metric
    return None
