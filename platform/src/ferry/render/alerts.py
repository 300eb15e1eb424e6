"""Prometheus rule groups: the alerts of one model (from its monitoring spec) and of the platform.

Pure data in Prometheus' rule-file format; `monitoring.py` wraps the same groups in PrometheusRule objects
for a cluster and writes them as plain rule files for local mode, so both run exactly these rules.

Severity. The SLO alerts follow the SRE workbook's multiwindow, multi-burn-rate table: 14.4x over 1h (and
5m) and 6x over 6h (and 30m) page, 3x over 1d (and 2h) and 1x over 3d (and 6h) open a ticket. Every other
model alert is at most a ticket: a rollback has already mitigated, and drift, a failed run or a stale model
need a working day, not a wake-up call. `monitoring.oncall.severity` caps all of a model's alerts, so a
`ticket` model never pages and an `info` model only informs. Platform alerts go to the platform team.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from ferry.contract import metrics as m
from ferry.contract import names
from ferry.render import promql as q
from ferry.spec.checks import WorkloadFacts
from ferry.spec.models import ModelSpec

Rule = dict[str, Any]
Group = dict[str, Any]

SEVERITIES = ("info", "ticket", "page")  # ascending
PLATFORM_TEAM = "platform"
MLFLOW_NAMESPACE = "ferry-system"  # gitops/platform/apps/mlflow.yaml
MLFLOW_DEPLOYMENT = "mlflow"
SLO_PERIOD_DAYS = 30  # the error budget's period: burn rate 1 spends it in exactly 30 days
EVENT_WINDOW = "1h"  # how long a rollback or a failed run keeps its alert firing
QUALITY_HOLD = "15m"  # the quality gauge moves every minute over a 24 h window: a low value this long is real
STALE_GRACE_S = 6 * 3600  # one pipeline deadline (EnvProfile.workflow_deadline_seconds) of slack

# Where the plain rule files live in a checkout; local Prometheus loads these globs
# (ferry.local.supervisor.service_defs).
RULE_FILE_GLOBS = ("monitoring/rules/*.yaml", "monitoring/generated/rules/*.yaml")

FAST_BURN, SLOW_BURN = "page", "ticket"


@dataclass(frozen=True)
class BurnWindow:
    factor: float
    long: str
    short: str
    severity: str
    hold: str  # the rule's `for`: rides out one bad scrape, as in Pyrra and Sloth


BURN_WINDOWS = (
    BurnWindow(14.4, "1h", "5m", FAST_BURN, "2m"),
    BurnWindow(6, "6h", "30m", FAST_BURN, "15m"),
    BurnWindow(3, "1d", "2h", SLOW_BURN, "1h"),
    BurnWindow(1, "3d", "6h", SLOW_BURN, "3h"),
)
RATIO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def capped(severity: str, cap: str) -> str:
    return SEVERITIES[min(SEVERITIES.index(severity), SEVERITIES.index(cap))]


def percent(share: float) -> str:
    return f"{share * 100:.6g}%"


def alert(name: str, expr: str, *, hold: str | None, labels: dict[str, str], summary: str,
          description: str) -> Rule:
    rule: Rule = {"alert": name, "expr": expr}
    if hold:
        rule["for"] = hold
    rule["labels"] = labels
    rule["annotations"] = {"summary": summary, "description": description, "runbook_url": names.runbook_url(name)}
    return rule


# --- one model ---------------------------------------------------------------------------------------

def model_rule_groups(model: ModelSpec, facts: WorkloadFacts | None = None) -> list[Group]:
    """`facts`: the model's workload's, to leave out alerts whose metrics it never exports (all kept when None)."""
    return [slo_group(model), lifecycle_group(model, facts)]


def _model_labels(model: ModelSpec, natural: str, **extra: str) -> dict[str, str]:
    oncall = model.spec.monitoring.oncall
    return {"severity": capped(natural, oncall.severity), "team": oncall.team, "model": model.metadata.name,
            **extra}


def _ratio_records(model: ModelSpec) -> list[Rule]:
    name = model.metadata.name
    slo = model.spec.monitoring.slo
    boundary, _ = q.bucket_at_or_above(slo.latency_ms)
    mine = q.eq("model", name)
    records: list[Rule] = []
    for window in RATIO_WINDOWS:
        failed = q.sel(m.SERVING_REQUESTS.series, mine, q.eq("outcome", m.OUTCOME_SERVER_ERROR))
        errors = (f"sum by (model) (rate({failed}[{window}]))"
                  f" / sum by (model) (rate({q.sel(m.SERVING_REQUESTS.series, mine)}[{window}]))")
        fast = f"sum by (model) (rate({q.sel(m.SERVING_LATENCY.bucket, mine, q.le_matcher(boundary))}[{window}]))"
        total = f"sum by (model) (rate({q.sel(m.SERVING_LATENCY.count, mine)}[{window}]))"
        records.append({"record": m.ERROR_RATIO.at(window), "expr": errors})
        records.append({"record": m.SLOW_RATIO.at(window), "expr": f"1 - ({fast} / {total})"})
    return records


def _burn(model: ModelSpec, window: BurnWindow, kind: str) -> Rule:
    name = model.metadata.name
    slo = model.spec.monitoring.slo
    budget = 1 - (slo.availability if kind == "availability" else slo.latency_target)
    record = m.ERROR_RATIO if kind == "availability" else m.SLOW_RATIO
    threshold = f"({q.number(window.factor)} * {q.number(budget)})"
    mine = q.eq("model", name)
    expr = (f"{q.sel(record.at(window.long), mine)} > {threshold}"
            f"\nand {q.sel(record.at(window.short), mine)} > {threshold}")
    lasts = f"{SLO_PERIOD_DAYS / window.factor:.2g} days"
    if kind == "availability":
        alert_name = names.ALERT_ERROR_BUDGET_BURN
        summary = f"{name}: error budget burning at {q.number(window.factor)}x over {window.long}"
        description = (f"{{{{ $value | humanizePercentage }}}} of {name}'s requests failed with a server error over"
                       f" the last {window.long} (and the last {window.short}); the SLO of {percent(slo.availability)}"
                       f" availability allows {percent(budget)}. At this rate the {SLO_PERIOD_DAYS}-day error budget"
                       f" lasts {lasts}.")
    else:
        boundary, note = q.bucket_at_or_above(slo.latency_ms)
        alert_name = names.ALERT_LATENCY_BUDGET_BURN
        summary = f"{name}: latency budget burning at {q.number(window.factor)}x over {window.long}"
        description = (f"{{{{ $value | humanizePercentage }}}} of {name}'s requests took longer than"
                       f" {q.number(boundary)} ms over the last {window.long} (and the last {window.short}); the SLO"
                       f" wants {percent(slo.latency_target)} within {q.number(slo.latency_ms)} ms, so"
                       f" {percent(budget)} may be slower. At this rate the {SLO_PERIOD_DAYS}-day budget lasts"
                       f" {lasts}.{note}")
    labels = _model_labels(model, window.severity, slo=kind, window=window.long)
    return alert(alert_name, expr, hold=window.hold, labels=labels, summary=summary, description=description)


def slo_group(model: ModelSpec) -> Group:
    burns = [_burn(model, window, kind) for kind in ("availability", "latency") for window in BURN_WINDOWS]
    return {"name": f"ferry-model-{model.metadata.name}-slo", "rules": [*_ratio_records(model), *burns]}


def lifecycle_group(model: ModelSpec, facts: WorkloadFacts | None = None) -> Group:
    rules = [_drift(model)] if facts is None or facts.feature_drift else []
    rules += [_rolled_back(model), _pipeline_failed(model)]
    # Quality on labelled traffic comes from the prediction log, which only a workload that logs raw requests keeps.
    quality = _quality_low(model) if facts is None or facts.reads_log else None
    for optional in (_stale(model), quality):
        if optional is not None:
            rules.append(optional)
    return {"name": f"ferry-model-{model.metadata.name}-lifecycle", "rules": rules}


def _drift(model: ModelSpec) -> Rule:
    name = model.metadata.name
    monitoring = model.spec.monitoring
    threshold = q.number(monitoring.drift_psi_alert)
    expr = f"max by (model, feature) ({q.sel(m.DRIFT_PSI.series, q.eq('model', name))}) > {threshold}"
    description = (f"The population stability index of feature {{{{ $labels.feature }}}} is"
                   f" {{{{ $value | printf \"%.3f\" }}}}, above drift_psi_alert {threshold}, and has been for"
                   f" {monitoring.drift_window} (drift_window): {name}'s live inputs no longer look like its"
                   " training data, so its scores may be off.")
    return alert(names.ALERT_DRIFT_HIGH, expr, hold=monitoring.drift_window,
                 labels=_model_labels(model, "ticket"), summary=f"{name}: input drift on {{{{ $labels.feature }}}}",
                 description=description)


def _rolled_back(model: ModelSpec) -> Rule:
    name = model.metadata.name
    rollbacks = q.sel(m.ROLLOUT_DECISIONS.series, q.eq("model", name), q.eq("action", m.ACTION_ROLLBACK))
    expr = q.increased(rollbacks, EVENT_WINDOW, by=("version",))
    description = (f"The rollout controller rolled back {name}'s challenger (version {{{{ $labels.version }}}})"
                   f" within the last {EVENT_WINDOW}: its canary analysis failed, traffic is back on the champion."
                   " Find out why before the next run promotes the same change.")
    return alert(names.ALERT_CANARY_ROLLED_BACK, expr, hold=None, labels=_model_labels(model, "ticket"),
                 summary=f"{name}: canary of version {{{{ $labels.version }}}} rolled back", description=description)


def _pipeline_failed(model: ModelSpec) -> Rule:
    name = model.metadata.name
    failed = q.regex("phase", m.FAILED_PHASES)
    argo = q.sel(m.ARGO_TEMPLATE_RUNS.series, q.eq("name", names.workflow_template_name(name)), failed)
    local = q.sel(m.PIPELINE_RUNS.series, q.eq("model", name), failed)
    expr = f"{q.increased(argo, EVENT_WINDOW)}\nor {q.increased(local, EVENT_WINDOW)}"
    description = (f"A run of the {names.workflow_template_name(name)} pipeline ended Failed or Error within the"
                   f" last {EVENT_WINDOW}. No new version of {name} was registered by it; the champion keeps"
                   " serving.")
    return alert(names.ALERT_PIPELINE_FAILED, expr, hold=None, labels=_model_labels(model, "ticket"),
                 summary=f"{name}: training pipeline failed", description=description)


def _stale(model: ModelSpec) -> Rule | None:
    schedule = model.spec.schedule
    if schedule is None:
        return None
    name = model.metadata.name
    gap = max_schedule_gap_s(schedule)
    limit = gap + STALE_GRACE_S
    expr = f"time() - max({q.sel(m.LAST_TRAINED.series, q.eq('model', name))}) > {limit}"
    description = (f"{name} was last trained {{{{ $value | humanizeDuration }}}} ago. Its schedule"
                   f" \"{schedule}\" (UTC) runs at most {_duration(gap)} apart, and a run may take"
                   f" {_duration(STALE_GRACE_S)}, so it should be younger than {_duration(limit)}.")
    return alert(names.ALERT_STALE, expr, hold="10m", labels=_model_labels(model, "ticket"),
                 summary=f"{name} is older than its retraining schedule allows", description=description)


def _quality_low(model: ModelSpec) -> Rule | None:
    """The champion's quality on labelled traffic breaks a gate it had to pass to be registered."""
    gates = model.spec.evaluation.gates
    if not gates:
        return None
    name = model.metadata.name
    broken = []
    for gate in gates:
        quality = q.sel(m.MODEL_QUALITY.series, q.eq("model", name), q.eq("variant", names.ALIAS_CHAMPION),
                        q.eq("metric", gate.metric))
        if gate.min is not None:
            broken.append(f"min by (model, version, metric) ({quality}) < {q.number(gate.min)}")
        if gate.max is not None:
            broken.append(f"max by (model, version, metric) ({quality}) > {q.number(gate.max)}")
    expr = "\nor ".join(f"({condition})" for condition in broken)
    bounds = ", ".join(f"{g.metric} {'>= ' + q.number(g.min) if g.min is not None else ''}"
                       f"{' and ' if g.min is not None and g.max is not None else ''}"
                       f"{'<= ' + q.number(g.max) if g.max is not None else ''}" for g in gates)
    description = (f"On the transactions {name}'s champion (version {{{{ $labels.version }}}}) answered in the last"
                   f" 24 h whose labels came back, {{{{ $labels.metric }}}} is {{{{ $value | printf \"%.3f\" }}}}:"
                   f" outside the evaluation gates it passed to be registered ({bounds}). It catches less than"
                   " it did offline: the traffic changed (see drift) or the labels say what drift cannot.")
    return alert(names.ALERT_QUALITY_LOW, expr, hold=QUALITY_HOLD, labels=_model_labels(model, "ticket"),
                 summary=f"{name}: champion's {{{{ $labels.metric }}}} on labelled traffic is below its gate",
                 description=description)


def max_schedule_gap_s(schedule: str) -> int:
    """The longest time between two runs of a cron schedule (UTC), over a little more than four years."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = croniter(schedule, start)
    previous = times.get_next(datetime)
    longest = 0.0
    for _ in range(2000):
        current = times.get_next(datetime)
        longest = max(longest, (current - previous).total_seconds())
        previous = current
        if (current - start).days > 4 * 366:
            break
    return int(longest)


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{value}{unit}" for value, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if value]
    return "".join(parts) or f"{seconds}s"


# --- the platform ------------------------------------------------------------------------------------

def platform_rule_groups() -> list[Group]:
    labels = {"team": PLATFORM_TEAM}
    head = q.sel(m.UP.series, q.eq("job", m.JOB_RAY), q.eq(m.TARGET_NODE_TYPE, "head"))
    available = q.sel(m.KUBE_DEPLOYMENT_AVAILABLE.series, q.eq("namespace", MLFLOW_NAMESPACE),
                      q.eq("deployment", MLFLOW_DEPLOYMENT))
    mlflow = f"{available} < 1 or {q.sel(m.UP.series, q.eq('job', m.JOB_MLFLOW))} == 0"
    unhealthy = (f"label_replace(count by (application, deployment) ({m.SERVE_REPLICA_HEALTHY.series} == 0),"
                 ' "model", "$1", "application", "(.*)") > 0')
    head_down = f'label_replace({head}, "model", "$1", "{m.TARGET_MODEL}", "(.+)") == 0'
    rules = [
        alert(names.ALERT_RAY_HEAD_DOWN, head_down, hold="2m", labels={"severity": "page", **labels},
              summary="Ray head {{ $labels.instance }} is down",
              description=("Prometheus has not been able to scrape the Ray head {{ $labels.instance }}"
                           "{{ if $labels.ferry_model }} of the RayService {{ $labels.ferry_model }}{{ end }}"
                           " for 2 minutes. Without its head a Ray cluster runs no new jobs or Serve"
                           " controller; serving and training on it stop.")),
        alert(names.ALERT_MLFLOW_DOWN, mlflow, hold="5m", labels={"severity": "page", **labels},
              summary="MLflow (tracking server and model registry) is down",
              description=("MLflow has had no available replica (or failed its scrape) for 5 minutes. Pipeline"
                           " steps cannot record runs or register versions, the rollout controller cannot move"
                           " weights, and routers keep serving the last versions they loaded.")),
        alert(names.ALERT_SERVE_REPLICAS_UNHEALTHY, unhealthy, hold="5m", labels={"severity": "ticket", **labels},
              summary=("{{ $value }} unhealthy Serve replica(s) of"
                       " {{ $labels.application }}/{{ $labels.deployment }}"),
              description=("Ray Serve has reported {{ $value }} replica(s) of the deployment {{ $labels.deployment }}"
                           " in the application {{ $labels.application }} as unhealthy for 5 minutes. Serve"
                           " restarts them; if the model's users notice, its SLO alerts page its team.")),
    ]
    return [{"name": "ferry-platform", "rules": rules}]


def rule_alert_names(groups: list[Group]) -> list[str]:
    return sorted({rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule})
