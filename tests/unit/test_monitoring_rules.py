"""The alert rules and the Alertmanager configuration: promtool and amtool happy, every alert labelled,
annotated, unit-tested and documented by a runbook. That the committed files are current is checked with
every other generated file (`ferry generate --check`, tests/golden/test_generated.py).

promtool and amtool come from the Debian packages prometheus and prometheus-alertmanager (task setup); the
tests that run them skip, saying so, where they are not installed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.binaries import system_command
from tests.support.kube_schemas import validate_yaml_documents

from ferry.adapters.workloads import workload_facts
from ferry.contract import metrics, names
from ferry.local.supervisor import service_defs
from ferry.render import alerting, alerts, monitoring
from ferry.render import promql as q
from ferry.render.profiles import PROFILES
from ferry.render.rayservice import rayservice
from ferry.settings import Settings
from ferry.spec import load_specs
from ferry.spec.models import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RUNBOOKS = ROOT / "docs" / "runbooks"
KUBE_PROMETHEUS_STACK = ROOT / "gitops" / "platform" / "apps" / "kube-prometheus-stack.yaml"


def models() -> list[ModelSpec]:
    specs, errors = load_specs([ROOT / "gitops" / "models"])
    assert errors == []
    return [spec.model for spec in specs]


def rule_files() -> list[Path]:
    return sorted(path for pattern in alerts.RULE_FILE_GLOBS for path in ROOT.glob(pattern))


def alert_rules() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend((path.name, rule) for rule in group["rules"] if "alert" in rule)
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


# --------------------------------------------------------------------------------------- generated files


def test_local_prometheus_loads_the_generated_rule_files() -> None:
    loaded = {p.relative_to(ROOT).as_posix() for p in rule_files()}
    generated = {path for path in monitoring.generated_files(models()) if path.endswith(".yaml")
                 and path != monitoring.PLATFORM_OBJECTS}
    assert generated == loaded
    config = yaml.safe_load(service_defs.prometheus_config(Settings(home=ROOT), with_alertmanager=True))
    assert config["rule_files"] == [str(ROOT / pattern) for pattern in alerts.RULE_FILE_GLOBS]
    ray = config["scrape_configs"][0]
    assert ray["job_name"] == metrics.JOB_RAY
    assert ray["relabel_configs"] == [{"target_label": metrics.TARGET_NODE_TYPE, "replacement": "head"}]


def test_rendered_prometheus_rule_holds_the_same_groups_as_the_local_file() -> None:
    workloads = workload_facts()
    for model in models():
        rule = monitoring.prometheus_rule(model, PROFILES["prod"], monitoring.facts_of(model, workloads))
        local = yaml.safe_load((ROOT / monitoring.model_rule_path(model.metadata.name)).read_text())
        assert rule["spec"]["groups"] == local["groups"]


def test_alerts_a_workload_cannot_fire_are_left_out_and_kept_for_the_rest() -> None:
    workloads = workload_facts()
    alerts_of = {model.metadata.name: {rule.get("alert") for group in monitoring.prometheus_rule(
        model, PROFILES["prod"], monitoring.facts_of(model, workloads))["spec"]["groups"] for rule in group["rules"]}
        for model in models()}
    # The recommender takes user ids: no feature drift to watch, no prediction log to judge quality on.
    assert not {names.ALERT_DRIFT_HIGH, names.ALERT_QUALITY_LOW} & alerts_of["recommender"]
    assert names.ALERT_CANARY_ROLLED_BACK in alerts_of["recommender"]
    assert {names.ALERT_DRIFT_HIGH, names.ALERT_QUALITY_LOW} <= alerts_of["fraud-detector"]
    assert not (ROOT / "gitops/rendered/prod/recommender/sensor.yaml").exists()
    assert (ROOT / "gitops/rendered/prod/fraud-detector/sensor.yaml").exists()
    platform = monitoring.platform_prometheus_rule(PROFILES["prod"])
    assert platform["spec"]["groups"] == yaml.safe_load((ROOT / monitoring.PLATFORM_RULES).read_text())["groups"]


def test_platform_objects_validate_strictly() -> None:
    path = ROOT / monitoring.PLATFORM_OBJECTS
    assert validate_yaml_documents(path) == []
    kinds = [doc["kind"] for doc in yaml.safe_load_all(path.read_text())]
    assert kinds == ["PrometheusRule", "PodMonitor", "ConfigMap", "ConfigMap"]


# ---------------------------------------------------------------------------------------------- promtool


def test_promtool_check_rules() -> None:
    files = [str(path) for path in rule_files()]
    assert len(files) == len(models()) + 1
    result = run(system_command("promtool"), "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_local_prometheus_config(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(service_defs.prometheus_config(Settings(home=ROOT), with_alertmanager=True))
    result = run(system_command("promtool"), "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rule_files())} rule files found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    tests = sorted(str(path) for path in (MONITORING / "tests").glob("*.test.yaml"))
    assert tests
    result = run(system_command("promtool"), "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def _rule_identity(labels: dict[str, Any]) -> tuple[str, ...]:
    """What tells two alerting rules of one model apart: the alert name and its SLO window labels."""
    return tuple(str(labels.get(key, "")) for key in ("alertname", "slo", "window"))


def test_every_alerting_rule_is_unit_tested() -> None:
    fired: set[tuple[str, ...]] = set()
    tested_files: set[str] = set()
    for path in (MONITORING / "tests").glob("*.test.yaml"):
        doc = yaml.safe_load(path.read_text())
        tested_files.update((path.parent / rule_file).resolve().as_posix() for rule_file in doc["rule_files"])
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                fired.update(_rule_identity({"alertname": case["alertname"], **exp["exp_labels"]})
                             for exp in case.get("exp_alerts", []))
    wanted = {_rule_identity({"alertname": rule["alert"], **rule["labels"]}) for _, rule in alert_rules()}
    assert sorted(wanted - fired) == [], "alerting rules no promtool test expects to fire"
    assert (ROOT / monitoring.PLATFORM_RULES).resolve().as_posix() in tested_files
    assert {alert for alert, *_ in wanted} == {*names.MODEL_ALERTS, *names.PLATFORM_ALERTS}


# ------------------------------------------------------------------------------------ labels and runbooks


@pytest.mark.parametrize(("where", "rule"), alert_rules(), ids=lambda v: v if isinstance(v, str) else v["alert"])
def test_alert_is_labelled_annotated_and_has_a_runbook(where: str, rule: dict[str, Any]) -> None:
    labels, annotations = rule["labels"], rule["annotations"]
    assert labels["severity"] in alerts.SEVERITIES, where
    assert re.fullmatch(r"[a-z][-a-z0-9]*", labels["team"]), where
    assert annotations["summary"].strip() and annotations["description"].strip(), where
    assert annotations["runbook_url"] == names.runbook_url(rule["alert"])
    assert annotations["runbook_url"].startswith(names.RUNBOOK_URL_BASE)
    runbook = RUNBOOKS / names.runbook_file(rule["alert"])
    assert runbook.is_file(), f"no runbook {runbook.relative_to(ROOT)} for {rule['alert']}"
    text = runbook.read_text()
    for section in ("## Meaning", "## Severity and routing", "## Confirm", "## Mitigate", "## Fix", "## Verify"):
        assert section in text, f"{runbook.name} lacks {section}"
    assert f"({runbook.name})" in (RUNBOOKS / "README.md").read_text(), "runbook not in the index"


def test_every_runbook_belongs_to_an_alert() -> None:
    runbooks = {path.name for path in RUNBOOKS.glob("*.md")} - {"README.md"}
    assert runbooks == {names.runbook_file(alert) for alert in (*names.MODEL_ALERTS, *names.PLATFORM_ALERTS)}


def test_model_alerts_carry_the_models_team_and_label() -> None:
    for model in models():
        for group in alerts.model_rule_groups(model):
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["labels"]["team"] == model.spec.monitoring.oncall.team
                    assert rule["labels"]["model"] == model.metadata.name


def _with_monitoring(model: ModelSpec, **changes: Any) -> ModelSpec:
    data = model.model_dump(mode="json")
    for dotted, value in changes.items():
        node = data["spec"]["monitoring"]
        *path, last = dotted.split("__")
        for key in path:
            node = node[key]
        node[last] = value
    return ModelSpec.model_validate(data)


@pytest.mark.parametrize(("oncall", "fast", "others"), [("page", "page", "ticket"), ("ticket", "ticket", "ticket"),
                                                       ("info", "info", "info")])
def test_oncall_severity_caps_every_alert(oncall: str, fast: str, others: str) -> None:
    model = _with_monitoring(next(m for m in models() if m.metadata.name == "fraud-detector"),
                             oncall__severity=oncall)
    severities = {(rule["alert"], rule["labels"].get("window")): rule["labels"]["severity"]
                  for group in alerts.model_rule_groups(model) for rule in group["rules"] if "alert" in rule}
    for (alert, window), severity in severities.items():
        paging = alert.endswith("BudgetBurn") and window in ("1h", "6h")
        assert severity == (fast if paging else others), (alert, window)


def test_latency_threshold_off_a_bucket_boundary_uses_the_next_one_and_says_so() -> None:
    model = _with_monitoring(models()[0], slo__latency_ms=120)
    rules = alerts.slo_group(model)["rules"]
    slow = next(r for r in rules if r.get("record") == metrics.SLOW_RATIO.at("5m"))
    assert 'le=~"150(\\\\.0)?"' in slow["expr"]
    burn = next(r for r in rules if r.get("alert") == "FerryModelLatencyBudgetBurn")
    assert "120 ms is not a latency bucket boundary" in burn["annotations"]["description"]
    assert "150 ms, is used" in burn["annotations"]["description"]
    exact = next(r for r in alerts.slo_group(models()[0])["rules"] if r.get("alert") == "FerryModelLatencyBudgetBurn")
    assert "boundary" not in exact["annotations"]["description"]
    assert q.bucket_at_or_above(7.5) == (7.5, "")
    assert q.bucket_at_or_above(20000)[0] == 10000
    assert q.le_matcher(7.5) == 'le=~"7\\\\.5"'


@pytest.mark.parametrize(("schedule", "gap"), [("0 3 * * 1", 7 * 86400), ("0 3 1 * *", 31 * 86400),
                                               ("*/15 * * * *", 900), ("0 3 * * 1-5", 3 * 86400)])
def test_max_schedule_gap(schedule: str, gap: int) -> None:
    assert alerts.max_schedule_gap_s(schedule) == gap


def test_unscheduled_model_has_no_staleness_alert() -> None:
    for model in models():
        names_ = {r.get("alert") for r in alerts.lifecycle_group(model)["rules"]}
        assert ("FerryModelStale" in names_) == (model.spec.schedule is not None)


def test_pod_monitor_scrapes_the_rayservice_pods_on_8080() -> None:
    for model in models():
        monitor = monitoring.pod_monitor(model, PROFILES["prod"])
        pod_labels = rayservice(model, PROFILES["prod"])["spec"]["rayClusterConfig"]["headGroupSpec"][
            "template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        [endpoint] = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["portNumber"] == 8080
        assert {"targetLabel": "job", "replacement": "ray"} in endpoint["relabelings"]
        assert "model" not in {r["targetLabel"] for r in endpoint["relabelings"]}, "would rename ferry's `model`"


def test_runbook_names() -> None:
    assert names.runbook_file("FerryModelDriftHigh") == "ferry-model-drift-high.md"
    assert names.runbook_file("FerryMLflowDown") == "ferry-mlflow-down.md"
    assert len(names.dashboard_uid("m" * 40)) <= names.GRAFANA_UID_MAX


# ------------------------------------------------------------------------------------------ Alertmanager


def _amtool_knows_url_file() -> bool:
    version = run(system_command("amtool"), "--version")
    found = re.search(r"version (\d+)\.(\d+)", version.stdout + version.stderr)
    return found is not None and (int(found.group(1)), int(found.group(2))) >= (0, 26)


def _checked(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    text = yaml.safe_dump(config, sort_keys=False)
    if not _amtool_knows_url_file():  # webhook `url_file` is newer than Debian 12's amtool 0.25
        text = text.replace(f"url_file: {alerting.ONCALL_URL_FILE}", "url: https://oncall.invalid/alertmanager")
    path = tmp_path / name
    path.write_text(text)
    result = run(system_command("amtool"), "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return path


def _receiver(config: Path, *labels: str) -> str:
    result = run(system_command("amtool"), "config", "routes", "test", f"--config.file={config}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_amtool_checks_local_and_cluster_configs(tmp_path: Path) -> None:
    result = run(system_command("amtool"), "check-config", str(ROOT / monitoring.LOCAL_ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    settings = Settings(home=tmp_path, receiver_port=19095)
    local = yaml.safe_load(service_defs.alertmanager_config(settings))
    urls = {hook["url"] for receiver in local["receivers"] for hook in receiver.get("webhook_configs", [])}
    assert urls == {"http://127.0.0.1:19095/alerts"}
    local_file = _checked(tmp_path, "local.yml", local)
    cluster = yaml.safe_load(KUBE_PROMETHEUS_STACK.read_text())["spec"]["source"]["helm"]["valuesObject"]
    cluster_file = _checked(tmp_path, "cluster.yml", cluster["alertmanager"]["config"])
    for config in (local_file, cluster_file):
        assert _receiver(config, "severity=page", "team=risk", "alertname=FerryModelErrorBudgetBurn") == "page"
        assert _receiver(config, "severity=ticket", "team=platform") == "ticket"
        assert _receiver(config, "severity=info", "team=risk") == "info"
        assert _receiver(config, "alertname=Watchdog", "severity=none") == "null"
        assert _receiver(config, "alertname=KubePodCrashLooping", "severity=warning") == "default"


def test_cluster_alertmanager_config_is_ferrys_and_reads_the_oncall_url_from_a_secret() -> None:
    values = yaml.safe_load(KUBE_PROMETHEUS_STACK.read_text())["spec"]["source"]["helm"]["valuesObject"]
    manager = values["alertmanager"]
    assert manager["config"] == alerting.cluster_config(), "edit kube-prometheus-stack.yaml or alerting.py"
    hooks = [hook for receiver in manager["config"]["receivers"] for hook in receiver.get("webhook_configs", [])
             if receiver["name"] != alerting.RETRAIN_RECEIVER]  # an in-cluster Service URL (ferry.render.events)
    assert hooks and all(set(hook) == {"url_file", "send_resolved"} for hook in hooks), "no URL in Git"
    spec = manager["alertmanagerSpec"]
    [volume] = [v for v in spec["volumes"] if v["name"] == "grafana-oncall"]
    assert volume["secret"]["secretName"] == alerting.ONCALL_SECRET
    [mount] = [m for m in spec["volumeMounts"] if m["name"] == "grafana-oncall"]
    assert mount["mountPath"] == alerting.ONCALL_MOUNT
    assert alerting.ONCALL_URL_FILE.removesuffix(f"/{alerting.ONCALL_SECRET_KEY}") == mount["mountPath"]


def test_routes_group_per_team_and_page_inhibits_ticket() -> None:
    config = alerting.local_config("http://127.0.0.1:9095/alerts")
    assert config["route"]["group_by"][0] == "team"
    [inhibit, _] = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="page"'] and {"team", "model", "alertname"} <= set(inhibit["equal"])
