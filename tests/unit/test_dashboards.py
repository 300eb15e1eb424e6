"""Grafana dashboards: schema-valid, every panel queries Prometheus with PromQL that promtool parses, and every
metric a dashboard or a rule reads is in the metric catalogue (ferry.contract.metrics, which generates
docs/reference/metrics.md), and every catalogued metric said to be read is read."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.binaries import system_command
from tests.support.kube_schemas import validate_grafana_dashboard, validate_object

from ferry.contract import metrics, names
from ferry.render import alerts, dashboards, monitoring
from ferry.render.profiles import PROFILES
from ferry.spec import load_specs
from ferry.spec.models import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
# Grafana's interval variables, replaced by a duration before promtool parses an expression.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}
PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                   "bool", "offset", "inf", "nan"}


def models() -> list[ModelSpec]:
    specs, errors = load_specs([ROOT / "gitops" / "models"])
    assert errors == []
    return [spec.model for spec in specs]


def all_dashboards() -> list[tuple[str, dict[str, Any]]]:
    boards = [(model.metadata.name, dashboards.model_dashboard(model)) for model in models()]
    return boards + sorted(dashboards.platform_dashboards().items())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        found.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return found


def dashboard_exprs() -> list[str]:
    return [target["expr"] for _, board in all_dashboards() for panel in panels(board)
            for target in panel.get("targets", [])]


def rule_exprs() -> list[tuple[str, str]]:
    """(expr, recorded name or "") of every rule in every rule file local Prometheus loads."""
    found: list[tuple[str, str]] = []
    for pattern in alerts.RULE_FILE_GLOBS:
        for path in sorted(ROOT.glob(pattern)):
            for group in yaml.safe_load(path.read_text())["groups"]:
                found.extend((rule["expr"], rule.get("record", "")) for rule in group["rules"])
    return found


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or label names."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|`[^`]*`', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names_ = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if not call and word not in PROMQL_KEYWORDS:
            names_.add(word)
    return names_


def used_metrics() -> dict[str, str]:
    """Every series name a dashboard or a rule reads or records, and where."""
    used: dict[str, str] = {}
    for expr in dashboard_exprs():
        used.update(dict.fromkeys(metric_names(expr), "a dashboard"))
    for expr, record in rule_exprs():
        used.update(dict.fromkeys(metric_names(expr), "a rule"))
        if record:
            used[record] = "a recording rule"
    return used


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize(("name", "board"), all_dashboards(), ids=lambda v: v if isinstance(v, str) else "")
def test_dashboard_is_schema_valid(name: str, board: dict[str, Any]) -> None:
    assert validate_grafana_dashboard(board) == [], name
    assert board["uid"] and len(board["uid"]) <= names.GRAFANA_UID_MAX
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]


def test_dashboard_uids_and_panel_ids_are_unique() -> None:
    uids = [board["uid"] for _, board in all_dashboards()]
    assert len(uids) == len(set(uids))
    for _, board in all_dashboards():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]


@pytest.mark.parametrize(("name", "board"), all_dashboards(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_panel_has_a_promql_target(name: str, board: dict[str, Any]) -> None:
    for panel in panels(board):
        targets = panel.get("targets", [])
        assert targets, f"{name}: panel {panel['title']!r} has no target"
        assert all(target.get("expr", "").strip() for target in targets), f"{name}: {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert len({t["refId"] for t in targets}) == len(targets)


def test_model_dashboard_has_the_panels_the_issue_asks_for() -> None:
    board = dashboards.model_dashboard(models()[0])
    titles = " | ".join(panel["title"] for panel in panels(board)).lower()
    for wanted in ("requests by variant", "error rate", "p50 / p90 / p99", "challenger weight", "canary decisions",
                   "score distribution", "drift"):
        assert wanted in titles


def test_every_dashboard_expr_parses_with_promtool(tmp_path: Path) -> None:
    promtool = system_command("promtool")
    rules = []
    for index, expr in enumerate(sorted(set(dashboard_exprs()))):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr.replace("$1", ""), f"unknown Grafana variable in {expr}"
        rules.append({"record": f"ferry_dashboard_check_{index}", "expr": expr})
    path = tmp_path / "dashboard-exprs.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-exprs", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_metric_name_extraction() -> None:
    expr = ('sum by (le, variant) (rate(ray_ferry_serving_latency_ms_bucket{model="a",le=~"100(\\\\.0)?"}[5m]))'
            ' / on (model) group_left () x:y:z offset 1h and time() - max(up) > bool 1e-3 or ALERTS')
    assert metric_names(expr) == {"ray_ferry_serving_latency_ms_bucket", "x:y:z", "up", "ALERTS"}


def test_every_metric_in_dashboards_and_rules_is_catalogued() -> None:
    used = used_metrics()
    missing = sorted(f"{name} (in {where})" for name, where in used.items() if metrics.find(name) is None)
    assert missing == [], f"add to the catalogue in ferry/contract/metrics.py: {missing}"
    assert len(used) >= 20


def test_the_catalogue_says_which_metrics_are_read() -> None:
    """`used_by` is what the reference page shows: a metric said to be read is read, and one read says so."""
    read = {metrics.find(name) for name in used_metrics()}
    said = {metric for metric in metrics.CATALOGUE if metric.used_by}
    assert sorted(m.series for m in said - read) == [], "catalogued as used, but no rule or dashboard reads it"
    assert sorted(m.series for m in read - said if m) == [], "read by a rule or dashboard: say so in `used_by`"


def test_catalogue_lookup_resolves_histograms_and_windows() -> None:
    assert metrics.find(metrics.SERVING_LATENCY.bucket) is metrics.SERVING_LATENCY
    assert metrics.find(metrics.SERVING_LATENCY.series + "_sum") is metrics.SERVING_LATENCY
    assert metrics.find(metrics.ERROR_RATIO.at("30m")) is metrics.ERROR_RATIO
    assert metrics.find(metrics.SERVING_REQUESTS.series + "_bucket") is None  # a counter has no buckets
    assert metrics.find(metrics.ERROR_RATIO.series + "soon") is None
    assert metrics.find("ferry_not_a_metric") is None


def test_catalogue_marks_every_metric_produced_or_planned() -> None:
    assert {metric.status for metric in metrics.CATALOGUE} <= set(metrics.Status)
    produced = {metric.series for metric in metrics.CATALOGUE if metric.status is metrics.Status.PRODUCED}
    for metric in (metrics.PIPELINE_RUNS, metrics.DRIFT_PSI, metrics.LAST_TRAINED, metrics.SERVING_REQUESTS):
        assert metric.series in produced


def test_configmaps_carry_the_sidecar_label_and_the_dashboard() -> None:
    prod = PROFILES["prod"]
    maps = [dashboards.model_configmap(model, prod) for model in models()] + dashboards.platform_configmaps(prod)
    for config_map in maps:
        assert validate_object(config_map) == [], config_map["metadata"]["name"]
        assert config_map["metadata"]["labels"][names.GRAFANA_DASHBOARD_LABEL] == "1"
        [(key, text)] = config_map["data"].items()
        board = json.loads(text)
        assert key == f"{board['uid']}.json"
        assert validate_grafana_dashboard(board) == []
    model = models()[0]
    assert json.loads(next(iter(dashboards.model_configmap(model, prod)["data"].values()))) == \
        dashboards.model_dashboard(model)


def test_dashboard_json_files_match_the_configmaps() -> None:
    """The files local Grafana users import are the boards the cluster's ConfigMaps carry (committed: golden)."""
    files = monitoring.generated_files(models())
    for _, board in all_dashboards():
        assert json.loads(files[f"{monitoring.DASHBOARDS_DIR}/{board['uid']}.json"]) == board
