"""Metric names and small PromQL builders shared by the alert rules and the dashboards.

Every metric a rule or a dashboard reads is named here once, and catalogued in docs/reference/metrics.md
(a test checks both directions). The serving names are what Prometheus sees after Ray's exporter adds its
`ray_` prefix to the application metrics of `ferry.serving.metrics`; that module sits above `render` in
the layer order, so its latency boundaries are repeated here and a unit test keeps the two copies equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# --- ferry serving (ferry.serving.metrics, exported by Ray with the `ray_` prefix) -------------------
SERVING_REQUESTS = "ray_ferry_serving_requests_total"  # {model,version,variant,outcome}
SERVING_LATENCY_BUCKET = "ray_ferry_serving_latency_ms_bucket"  # {model,version,variant,le}
SERVING_LATENCY_COUNT = "ray_ferry_serving_latency_ms_count"
SERVING_SCORE_BUCKET = "ray_ferry_serving_score_bucket_total"
SERVING_POSITIVES = "ray_ferry_serving_predicted_positive_total"
# ferry.serving.drift, from the router too: PSI against the champion's training reference, its training time.
DRIFT_PSI = "ray_ferry_drift_psi"  # {model,feature} gauge; feature="score" for the model's score
LAST_TRAINED = "ray_ferry_model_last_trained_timestamp_seconds"  # {model} gauge, the champion's

# --- ferry rollout (ferry.rollout.metrics, scraped from the rollout step while it runs) ---------------
ROLLOUT_CHECKS = "ferry_rollout_checks_total"  # {model,version,verdict}
ROLLOUT_DECISIONS = "ferry_rollout_decisions_total"  # {model,version,action}
ROLLOUT_WEIGHT = "ferry_rollout_weight"  # {model,version}
ROLLOUT_ERROR_RATE_DELTA = "ferry_rollout_error_rate_delta"  # {model,version}

# --- ferry local mode (ferry.local.alerts.receiver, job ferry-receiver) ----------------------------------------
PIPELINE_RUNS = "ferry_pipeline_runs_total"  # {model,phase} counter, the local runner's finished runs

# --- Ray Serve built-ins ------------------------------------------------------------------------------
SERVE_REPLICA_HEALTHY = "ray_serve_deployment_replica_healthy"  # {application,deployment,replica}
SERVE_TARGET_REPLICAS = "ray_serve_autoscaling_target_replicas"  # {application,deployment}
SERVE_HTTP_REQUESTS = "ray_serve_num_http_requests_total"  # {application,route,method,status_code}
SERVE_HTTP_ERRORS = "ray_serve_num_http_error_requests_total"  # {application,route,method,error_code}
SERVE_HTTP_LATENCY_BUCKET = "ray_serve_http_request_latency_ms_bucket"  # {application,route,method,...,le}

# --- Argo Workflows controller (v3.6+/v4 names, `argo_workflows_` prefix, no counter suffix added) ----
ARGO_TEMPLATE_RUNS = "argo_workflows_workflowtemplate_triggered_total"  # {name,namespace,cluster_scope,phase}
ARGO_TEMPLATE_RUNTIME_BUCKET = "argo_workflows_workflowtemplate_runtime_bucket"  # {name,namespace,cluster_scope,le}
ARGO_WORKFLOWS_BY_PHASE = "argo_workflows_gauge"  # {phase}

# --- Prometheus itself and kube-state-metrics ---------------------------------------------------------
UP = "up"
ALERTS = "ALERTS"
KUBE_DEPLOYMENT_AVAILABLE = "kube_deployment_status_replicas_available"  # {namespace,deployment}

# Copy of ferry.serving.metrics.LATENCY_BOUNDARIES_MS (tests/unit/test_monitoring_rules.py keeps them equal).
LATENCY_BOUNDARIES_MS: tuple[float, ...] = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300,
                                            500, 1000, 2000, 5000, 10000)
FAILED_PHASES = "Failed|Error"  # Argo's workflow phases that mean the run did not succeed


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def regex(label: str, pattern: str) -> str:
    return f'{label}=~"{pattern}"'


def sel(metric: str, *matchers: str) -> str:
    """A selector; always with braces, so every metric name in an expression is followed by `{`."""
    return f"{metric}{{{','.join(matchers)}}}"


def number(value: float) -> str:
    """A float as PromQL reads it, without binary noise: 1 - 0.999 is 0.001, not 0.0010000000000000009."""
    return f"{value:.12g}"


def le_matcher(boundary: float) -> str:
    """Match one histogram bucket whatever the exporter's float formatting: `100` and `100.0` alike.

    Ray's OpenCensus path writes `str(bound)`, the OpenTelemetry path may write `100.0`, and Prometheus 3
    normalises `le` on ingestion; the regex accepts each spelling of the same number.
    """
    if float(boundary).is_integer():
        return regex("le", f"{int(boundary)}(\\\\.0)?")
    return regex("le", number(boundary).replace(".", "\\\\."))


def bucket_at_or_above(value: float, boundaries: Sequence[float] = LATENCY_BOUNDARIES_MS) -> tuple[float, str]:
    """The histogram boundary a threshold is measured at, and a sentence saying so when it is not exact."""
    finite = sorted(float(b) for b in boundaries)
    above = [b for b in finite if b >= value - 1e-9]
    if above and math.isclose(above[0], value):
        return above[0], ""
    if above:
        return above[0], (f" {number(value)} ms is not a latency bucket boundary, so the nearest boundary at or"
                          f" above it, {number(above[0])} ms, is used.")
    return finite[-1], (f" {number(value)} ms is above the largest latency bucket boundary, so"
                        f" {number(finite[-1])} ms is used (stricter than the SLO).")


def increased(selector: str, window: str, by: Sequence[str] = ()) -> str:
    """At least one event in `window` on a counter, counting the series a first event creates.

    A labelled counter (prometheus_client, OpenTelemetry) appears with the value 1 at its first event, and
    `increase()` never counts a series' first sample; `unless ... offset` catches a series that is new.
    """
    grouping = f"sum by ({', '.join(by)}) " if by else "sum"
    return (f"{grouping}(increase({selector}[{window}])) > 0"
            f"\nor {grouping}({selector} unless {selector} offset {window}) > 0")
