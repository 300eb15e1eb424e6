"""Grafana dashboards: schema-valid, every panel queries Prometheus with PromQL that promtool parses, and every
metric a dashboard or a rule reads is in the catalogue (docs/reference/metrics.md)."""

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

from ferry.contract import names
from ferry.render import alerts, dashboards
from ferry.render.profiles import PROFILES
from ferry.spec import load_specs
from ferry.spec.models import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "reference" / "metrics.md"
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


def catalogued(name: str, catalogue: str) -> bool:
    name = re.sub(r"(:ratio_rate)\d+[smhd]$", r"\1<window>", name)
    candidates = {name, re.sub(r"_(bucket|count|sum)$", "", name)}
    return any(f"`{candidate}`" in catalogue for candidate in candidates)


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
    catalogue = CATALOGUE.read_text()
    used: dict[str, str] = {}
    for expr in dashboard_exprs():
        used.update(dict.fromkeys(metric_names(expr), "a dashboard"))
    for expr, record in rule_exprs():
        used.update(dict.fromkeys(metric_names(expr), "a rule"))
        if record:
            used[record] = "a recording rule"
    missing = sorted(f"{name} (in {where})" for name, where in used.items() if not catalogued(name, catalogue))
    assert missing == [], f"add to docs/reference/metrics.md: {missing}"
    assert len(used) >= 20


def test_catalogue_marks_every_metric_produced_or_planned() -> None:
    catalogue = CATALOGUE.read_text()
    sections = re.split(r"^## ", catalogue, flags=re.MULTILINE)[1:]
    statuses = {section.splitlines()[0] for section in sections}
    assert {"ferry: serving (produced)", "ferry: rollout (produced)", "ferry: local runs and alerts (produced)"} \
        <= statuses
    for section in sections:
        title = section.splitlines()[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        if rows:
            assert "produced" in title or "planned" in title, title
    planned = next((s for s in sections if s.startswith("ferry: planned")), "")  # none left today
    local = next(s for s in sections if s.startswith("ferry: local runs and alerts (produced)"))
    assert "`ferry_pipeline_runs_total`" in local and "`ferry_pipeline_runs_total`" not in planned
    produced = next(s for s in sections if s.startswith("ferry: drift and model age (produced)"))
    for metric in ("ray_ferry_drift_psi", "ray_ferry_model_last_trained_timestamp_seconds"):
        assert f"`{metric}`" in produced and f"`{metric}`" not in planned


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


def test_committed_dashboard_json_matches_the_configmaps() -> None:
    for _, board in all_dashboards():
        committed = ROOT / "monitoring" / "generated" / "dashboards" / f"{board['uid']}.json"
        assert json.loads(committed.read_text()) == board, "run `.venv/bin/python monitoring/generate.py`"
