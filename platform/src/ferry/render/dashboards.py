"""Grafana dashboards, built with grafana-foundation-sdk: one per model, one for pipelines, one for the platform.

Each is a classic (schemaVersion) dashboard JSON model, rendered as text (`dashboard_json`) and as a ConfigMap
labelled `grafana_dashboard: "1"`, which kube-prometheus-stack's Grafana sidecar loads from every namespace.
Queries use a `datasource` variable (any Prometheus) and `$__rate_interval`. Every metric they read is in
the catalogue `ferry.contract.metrics` (documented in docs/reference/metrics.md).

The SDK line pinned here (10.1) still emits a dashboard `style` and a variable `id` that the current
dashboard schema no longer has; `_encode` drops both so the JSON validates strictly.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import prometheus as pm
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

from ferry.contract import metrics as m
from ferry.contract import names
from ferry.render import alerts
from ferry.render import promql as q
from ferry.render.profiles import EnvProfile
from ferry.spec.models import ModelSpec

Board = dict[str, Any]
RATE = "$__rate_interval"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
PIPELINES_UID = "ferry-pipelines"
PLATFORM_UID = "ferry-platform"
TAGS = ["ferry"]
Target = tuple[str, str]  # (expr, legend)


class _Layout:
    """Numbers panels in order, so the JSON is the same on every render."""

    def __init__(self) -> None:
        self.next_id = 1

    def take(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _targets(panel: Any, targets: list[Target]) -> Any:
    for index, (expr, legend) in enumerate(targets):
        query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + index))
        panel = panel.with_target(query)
    return panel


def _thresholds(limit: float | None) -> db.ThresholdsConfig | None:
    if limit is None:
        return None
    return (db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=None, color="green"), Threshold(value=limit, color="red")]))


def _series(layout: _Layout, title: str, description: str, unit: str, targets: list[Target], *,
            width: int = 12, limit: float | None = None, bars: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().id(layout.take()).title(title).description(description).datasource(DATASOURCE)
             .unit(unit).span(width).height(8).line_width(1).fill_opacity(10)
             .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
                     .placement(cm.LegendPlacement.BOTTOM).show_legend(True))
             .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)))
    if bars:
        panel = panel.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(80)
    thresholds = _thresholds(limit)
    if thresholds is not None:
        panel = panel.thresholds(thresholds).thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.LINE))
    return _targets(panel, targets)


def _stat(layout: _Layout, title: str, description: str, unit: str, targets: list[Target], *,
          width: int = 6, limit: float | None = None) -> stat.Panel:
    panel = (stat.Panel().id(layout.take()).title(title).description(description).datasource(DATASOURCE)
             .unit(unit).span(width).height(8).graph_mode(cm.BigValueGraphMode.AREA)
             .color_mode(cm.BigValueColorMode.VALUE).text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    thresholds = _thresholds(limit)
    if thresholds is not None:
        panel = panel.thresholds(thresholds)
    return _targets(panel, targets)


def _heatmap(layout: _Layout, title: str, description: str, expr: str, *, width: int = 12) -> heatmap.Panel:
    query = prometheus.Dataquery().expr(expr).legend_format("{{le}}").format(pm.PromQueryFormat.HEATMAP).ref_id("A")
    return (heatmap.Panel().id(layout.take()).title(title).description(description).datasource(DATASOURCE)
            .span(width).height(8).calculate(False).with_target(query))


def _dashboard(uid: str, title: str, description: str, tags: list[str],
               rows: list[tuple[str, list[Any]]], layout: _Layout) -> Board:
    builder = (db.Dashboard(title).uid(uid).description(description).tags([*TAGS, *tags]).readonly()
               .time("now-6h", "now").refresh("1m").timezone("utc")
               .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    for row_title, panels in rows:
        builder = builder.with_row(db.Row(row_title).id(layout.take()))
        for panel in panels:
            builder = builder.with_panel(panel)
    return _encode(builder.build())


def _encode(dashboard: Any) -> Board:
    board: Board = json.loads(json.dumps(dashboard, cls=JSONEncoder))
    board.pop("style", None)
    for variable in board.get("templating", {}).get("list", []):
        variable.pop("id", None)
    return board


def dashboard_json(board: Board) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


# --- one model ---------------------------------------------------------------------------------------

def model_dashboard(model: ModelSpec) -> Board:
    name = model.metadata.name
    monitoring = model.spec.monitoring
    slo = monitoring.slo
    layout = _Layout()
    mine = q.eq("model", name)
    requests = q.sel(m.SERVING_REQUESTS.series, mine)
    errors = q.sel(m.SERVING_REQUESTS.series, mine, q.eq("outcome", m.OUTCOME_SERVER_ERROR))
    client_errors = q.sel(m.SERVING_REQUESTS.series, mine, q.eq("outcome", m.OUTCOME_CLIENT_ERROR))
    ok = q.sel(m.SERVING_REQUESTS.series, mine, q.eq("outcome", m.OUTCOME_OK))
    latency = q.sel(m.SERVING_LATENCY.bucket, mine)
    boundary, _ = q.bucket_at_or_above(slo.latency_ms)

    def quantile(level: float, by: str = "le") -> str:
        return f"histogram_quantile({level}, sum by ({by}) (rate({latency}[{RATE}])))"

    traffic = [
        _series(layout, "Requests by variant", "Scored rows (and rejected requests) per second, by variant.",
                "reqps", [(f"sum by (variant) (rate({requests}[{RATE}]))", "{{variant}}")]),
        _series(layout, "Error rate by variant",
                "Share of requests that ended in a server error (5xx), and in a client error (4xx).",
                "percentunit", [
                    (f"sum by (variant) (rate({errors}[{RATE}])) / sum by (variant) (rate({requests}[{RATE}]))",
                     "server {{variant}}"),
                    (f"sum by (variant) (rate({client_errors}[{RATE}]))"
                     f" / sum by (variant) (rate({requests}[{RATE}]))", "client {{variant}}")],
                limit=1 - slo.availability),
        _stat(layout, "Error budget burn (1h)",
              f"How fast the last hour spends the error budget of {alerts.percent(slo.availability)}"
              " availability; 14.4 pages.", "x",
              [(f"{q.sel(m.ERROR_RATIO.at('1h'), mine)} / {q.number(1 - slo.availability)}", "errors"),
               (f"{q.sel(m.SLOW_RATIO.at('1h'), mine)} / {q.number(1 - slo.latency_target)}", "latency")],
              width=12, limit=14.4),
    ]
    speed = [
        _series(layout, "Latency p50 / p90 / p99", "Router time per HTTP request, all variants.", "ms",
                [(quantile(0.5), "p50"), (quantile(0.9), "p90"), (quantile(0.99), "p99")],
                limit=slo.latency_ms),
        _series(layout, "Latency p99 by variant", "The canary compares these two lines.", "ms",
                [(quantile(0.99, "le, variant"), "p99 {{variant}}")], limit=slo.latency_ms),
        _series(layout, f"Requests slower than {q.number(boundary)} ms",
                f"Share of requests slower than the latency SLO ({alerts.percent(slo.latency_target)} within"
                f" {q.number(slo.latency_ms)} ms).", "percentunit",
                [(q.sel(m.SLOW_RATIO.at("5m"), mine), "5m"), (q.sel(m.SLOW_RATIO.at("1h"), mine), "1h")],
                width=24, limit=1 - slo.latency_target),
    ]
    canary = [
        _series(layout, "Challenger weight", "Share of traffic (0-100) the rollout controller gives the challenger.",
                "percent", [(f"max by (version) ({q.sel(m.ROLLOUT_WEIGHT.series, mine)})", "v{{version}}")], width=8),
        _series(layout, "Canary decisions", "What the controller decided at each check.", "short",
                [(f"sum by (action) (increase({q.sel(m.ROLLOUT_DECISIONS.series, mine)}[{RATE}]))", "{{action}}")],
                width=8, bars=True),
        _series(layout, "Canary checks by verdict", "Checks that passed, failed or were inconclusive.", "short",
                [(f"sum by (verdict) (increase({q.sel(m.ROLLOUT_CHECKS.series, mine)}[{RATE}]))", "{{verdict}}")],
                width=8, bars=True),
    ]
    quality = [
        _heatmap(layout, "Score distribution", "Model scores per bucket, all variants.",
                 f"sum by (le) (increase({q.sel(m.SERVING_SCORE_BUCKETS.series, mine)}[{RATE}]))"),
        _series(layout, "Positive rate by variant", "Share of scored rows whose decision was positive.",
                "percentunit",
                [(f"sum by (variant) (rate({q.sel(m.SERVING_POSITIVES.series, mine)}[{RATE}]))"
                  f" / sum by (variant) (rate({ok}[{RATE}]))",
                  "{{variant}}")]),
        _series(layout, "Input drift (PSI) by feature",
                f"Population stability index of each feature against the training data; alerts above"
                f" {q.number(monitoring.drift_psi_alert)} for {monitoring.drift_window}.", "short",
                [(f"max by (feature) ({q.sel(m.DRIFT_PSI.series, mine)})", "{{feature}}")],
                limit=monitoring.drift_psi_alert),
        _stat(layout, "Time since last training", "Age of the serving champion (since its training finished).", "s",
              [(f"time() - max({q.sel(m.LAST_TRAINED.series, mine)})", "age")], width=12),
    ]
    rows: list[tuple[str, list[Any]]] = [("Traffic and errors", traffic), ("Latency", speed), ("Canary", canary),
                                         ("Model", quality)]
    description = model.metadata.description or f"Serving, canary and model health of {name}."
    return _dashboard(names.dashboard_uid(name), f"ferry / {name}", description, ["model", name], rows, layout)


# --- pipelines and platform ----------------------------------------------------------------------------

def pipelines_dashboard() -> Board:
    layout = _Layout()
    runs = q.sel(m.ARGO_TEMPLATE_RUNS.series, q.regex("name", ".+-pipeline"))
    failed = q.sel(m.ARGO_TEMPLATE_RUNS.series, q.regex("name", ".+-pipeline"), q.regex("phase", m.FAILED_PHASES))
    runtime = q.sel(m.ARGO_TEMPLATE_RUNTIME.bucket, q.regex("name", ".+-pipeline"))
    local_failed = q.sel(m.PIPELINE_RUNS.series, q.regex("phase", m.FAILED_PHASES))
    cluster = [
        _series(layout, "Pipeline runs by phase", "Runs of each model's WorkflowTemplate entering each phase.",
                "short", [(f"sum by (name, phase) (increase({runs}[{RATE}]))", "{{name}} {{phase}}")], bars=True),
        _stat(layout, "Failed runs (24h)", "Runs that ended Failed or Error in the last day.", "short",
              [(f"sum by (name) (increase({failed}[1d]))", "{{name}}")], limit=1),
        _stat(layout, "Workflows by phase", "Workflows the controller holds now.", "short",
              [(f"sum by (phase) ({q.sel(m.ARGO_WORKFLOWS_BY_PHASE.series)})", "{{phase}}")]),
        _series(layout, "Run time p50 / p95 (1d)", "Time from Running to done, per pipeline.", "s",
                [(f"histogram_quantile(0.5, sum by (le, name) (rate({runtime}[1d])))", "p50 {{name}}"),
                 (f"histogram_quantile(0.95, sum by (le, name) (rate({runtime}[1d])))", "p95 {{name}}")],
                width=24),
    ]
    local = [
        _series(layout, "Local runs by phase", "`ferry up` runs by model and phase (local mode).", "short",
                [(f"sum by (model, phase) (increase({q.sel(m.PIPELINE_RUNS.series)}[{RATE}]))", "{{model}} {{phase}}")],
                bars=True),
        _stat(layout, "Failed local runs (24h)", "Local runs that ended Failed or Error in the last day.", "short",
              [(f"sum by (model) (increase({local_failed}[1d]))", "{{model}}")], width=12, limit=1),
    ]
    freshness = [
        _series(layout, "Model age", "Time since each model's serving champion finished training.", "s",
                [(f"time() - max by (model) ({q.sel(m.LAST_TRAINED.series)})", "{{model}}")], width=24),
    ]
    rows: list[tuple[str, list[Any]]] = [("Argo Workflows", cluster), ("Local runner", local), ("Freshness", freshness)]
    return _dashboard(PIPELINES_UID, "ferry / pipelines", "Training pipelines of every model: runs, failures,"
                      " run time and model age.", ["pipelines"], rows, layout)


def platform_dashboard() -> Board:
    layout = _Layout()
    ray_up = q.sel(m.UP.series, q.eq("job", m.JOB_RAY))
    http = q.sel(m.SERVE_HTTP_LATENCY.bucket)
    ray = [
        _stat(layout, "Ray scrape targets up", "Ray metrics endpoints Prometheus reaches, by node type.", "short",
              [(f"sum by ({m.TARGET_NODE_TYPE}, {m.TARGET_MODEL}) ({ray_up})", "{{ferry_model}} {{ray_node_type}}")],
              width=8),
        _series(layout, "Healthy Serve replicas", "Replicas Ray Serve reports healthy, by application.", "short",
                [(f"sum by (application, deployment) ({q.sel(m.SERVE_REPLICA_HEALTHY.series)})",
                  "{{application}}/{{deployment}}")], width=8),
        _series(layout, "Target Serve replicas", "Replicas the Serve autoscaler is aiming for.", "short",
                [(f"max by (application, deployment) ({q.sel(m.SERVE_TARGET_REPLICAS.series)})",
                  "{{application}}/{{deployment}}")], width=8),
    ]
    serve = [
        _series(layout, "HTTP requests by status", "Requests through the Serve proxies.", "reqps",
                [(f"sum by (application, status_code) (rate({q.sel(m.SERVE_HTTP_REQUESTS.series)}[{RATE}]))",
                  "{{application}} {{status_code}}")], width=8),
        _series(layout, "HTTP errors by code", "Errored responses of the Serve proxies.", "reqps",
                [(f"sum by (application, error_code) (rate({q.sel(m.SERVE_HTTP_ERRORS.series)}[{RATE}]))",
                  "{{application}} {{error_code}}")], width=8),
        _series(layout, "HTTP latency p99", "End-to-end latency at the Serve proxies.", "ms",
                [(f"histogram_quantile(0.99, sum by (le, application) (rate({http}[{RATE}])))",
                  "{{application}}")], width=8),
    ]
    available = q.sel(m.KUBE_DEPLOYMENT_AVAILABLE.series, q.eq("namespace", alerts.MLFLOW_NAMESPACE),
                      q.eq("deployment", alerts.MLFLOW_DEPLOYMENT))
    mlflow_up = q.sel(m.UP.series, q.eq("job", m.JOB_MLFLOW))
    firing = q.sel(m.ALERTS.series, q.eq("alertstate", "firing"), q.regex("team", ".+"))
    services = [
        _stat(layout, "MLflow replicas available", "kube-state-metrics on a cluster; `up` where MLflow is scraped.",
              "short", [(f"sum({available})", "available"), (f"sum({mlflow_up})", "up")],
              width=8),
        _series(layout, "Firing ferry alerts", "Alerts with a team label, by alert and severity.", "short",
                [(f"sum by (alertname, severity) ({firing})", "{{alertname}} {{severity}}")], width=16),
    ]
    rows: list[tuple[str, list[Any]]] = [("Ray", ray), ("Serve HTTP", serve), ("Services and alerts", services)]
    return _dashboard(PLATFORM_UID, "ferry / platform", "Ray clusters, Serve proxies, MLflow and ferry's alerts.",
                      ["platform"], rows, layout)


def platform_dashboards() -> dict[str, Board]:
    return {PIPELINES_UID: pipelines_dashboard(), PLATFORM_UID: platform_dashboard()}


# --- ConfigMaps for the Grafana sidecar ----------------------------------------------------------------

def _configmap(name: str, namespace: str, labels: dict[str, str], key: str, board: Board) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**labels, names.GRAFANA_DASHBOARD_LABEL: "1"}},
        "data": {key: dashboard_json(board)},
    }


def model_configmap(model: ModelSpec, profile: EnvProfile) -> dict[str, Any]:
    name = model.metadata.name
    return _configmap(names.dashboard_configmap_name(name), profile.namespace, names.labels(name, "dashboard"),
                      f"{names.dashboard_uid(name)}.json", model_dashboard(model))


def platform_configmaps(profile: EnvProfile) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/part-of": names.PART_OF, "app.kubernetes.io/managed-by": names.PART_OF,
              "app.kubernetes.io/component": "dashboard"}
    return [_configmap(f"{uid}-dashboard", profile.namespace, labels, f"{uid}.json", board)
            for uid, board in platform_dashboards().items()]
