"""Every dashboard panel against a live Prometheus: Ray and Prometheus on free loopback ports, the test process'
MLflow server, the router deployed with `deploy_local` (champion registered with its drift reference, fault
injection allowed), ferry's rules for the test spec loaded, real bounded traffic from the workload's simulator,
a few bad requests, and a canary whose challenger fails a quarter of its rows, run by the rollout controller as
`ferry step rollout` runs it (its metrics served on the rollout port Prometheus scrapes) until it rolls
back, which also fires FerryModelCanaryRolledBack.

Then each panel of the three dashboards `ferry.render.dashboards` builds (the model's, pipelines,
platform) is queried over the test's time range, as Grafana would (`$__rate_interval` = 1m, four scrape
intervals), and must return data. The panels that cannot have data on one machine are listed in
NO_LOCAL_DATA with the reason; the test also fails if one of them does get data, so the list stays true.
Panels whose data needs local pipeline runs are in COVERED_ELSEWHERE, with the live test that requires it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.integration import test_pipeline as pipeline_tests
from tests.integration.test_drift_e2e import (
    BatchLoad,
    Lab,
    drift_spec,
    lab_settings,
    register_version,
    request_rows,
    start_lab,
)
from tests.support.local_stack import renamed, restored_environ, stopping

from ferry.adapters.prometheus import Prometheus
from ferry.adapters.registry import Registry
from ferry.adapters.tls import tls_context
from ferry.contract import metrics as catalogue
from ferry.contract import names
from ferry.contract.names import TAG_FAULT_ERROR_RATE
from ferry.local.supervisor import procs
from ferry.render import dashboards
from ferry.render import promql as q
from ferry.rollout.controller import Controller, prometheus_observer
from ferry.rollout.metrics import RolloutMetrics
from ferry.spec.models import ModelSpec, RolloutSpec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RATE_INTERVAL = "1m"
ROLLOUT = {"steps": [50, 100], "interval": "5s", "hold_timeout": "60s",
           "analysis": {"min_requests": 50, "failure_limit": 2, "max_p99_latency_ms": 1000, "max_score_psi": 5.0}}
# Panels without a local producer. Argo Workflows and kube-state-metrics exist only on a cluster; local
# Prometheus does not scrape MLflow.
NO_LOCAL_DATA = {
    ("ferry / pipelines", "Pipeline runs by phase"): "Argo Workflows controller metrics (cluster only)",
    ("ferry / pipelines", "Failed runs (24h)"): "Argo Workflows controller metrics (cluster only)",
    ("ferry / pipelines", "Workflows by phase"): "Argo Workflows controller metrics (cluster only)",
    ("ferry / pipelines", "Run time p50 / p95 (1d)"): "Argo Workflows controller metrics (cluster only)",
    ("ferry / platform", "MLflow replicas available"): "kube-state-metrics, or an MLflow scrape job (neither local)",
}
# Panels that have local data, proved by another live test: the local-runner panels need finished `ferry up`
# runs and ferry's receiver, which this test does not start; test_pipeline.py runs a Succeeded and a Failed
# pipeline with Prometheus and the receiver up and requires both runs in these panels' queries.
LOCAL_RUNS_TEST = "tests/integration/test_pipeline.py::test_pipelines_dashboard_shows_the_finished_local_runs"
COVERED_ELSEWHERE = {("ferry / pipelines", title): LOCAL_RUNS_TEST for title in pipeline_tests.LOCAL_RUN_PANELS}


def monitored_spec() -> ModelSpec:
    """The drift lab's spec with a canary rollout, under this module's own name on the shared MLflow server."""
    base = renamed(drift_spec(), "fraud-monitoring")
    return base.model_copy(update={"spec": base.spec.model_copy(update={
        "rollout": RolloutSpec.model_validate(ROLLOUT)})})


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> Iterator[Lab]:
    settings = lab_settings(tmp_path_factory.mktemp("monitoring-home"), mlflow_uri)
    with restored_environ(), stopping(settings):
        yield start_lab(settings, monitored_spec(), allow_fault_injection=True)


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def has_data(prom_url: str, expr: str, start: float, end: float) -> bool:
    """A range query as Grafana sends it; True when any series has any sample."""
    query = expr.replace("$__rate_interval", RATE_INTERVAL)
    response = httpx.get(f"{prom_url}/api/v1/query_range", params={"query": query, "start": start, "end": end,
                                                                   "step": "10s"}, timeout=30, trust_env=False,
                         verify=tls_context())
    body = response.json()
    assert body.get("status") == "success", (query, body)
    return any(series["values"] for series in body["data"]["result"])


def run_failing_canary(lab: Lab) -> str:
    """Register a challenger that fails 25 % of its rows and let the controller roll it back under load."""
    challenger = register_version(lab.settings, lab.spec, seed=1)
    registry = Registry(lab.settings.mlflow_uri)
    registry.tag_version(lab.name, challenger, {TAG_FAULT_ERROR_RATE: 0.25, names.TAG_ROLLOUT_STATE: "registered"})
    metrics = RolloutMetrics()
    metrics.serve(lab.settings.host, lab.settings.rollout_metrics_port)  # as `ferry step rollout` does
    prom = Prometheus(lab.settings.prometheus_url)
    try:
        outcome = Controller(registry, lab.spec, prometheus_observer(prom, lab.name), metrics=metrics).run(challenger)
    finally:
        prom.close()
    assert outcome.action.value == "rollback", outcome
    return challenger


def test_every_dashboard_panel_has_data_after_real_traffic_and_a_canary(lab: Lab) -> None:
    started = time.time()
    rows = request_rows(lab.spec, seed=2)
    with BatchLoad(lab.url, rows, max_s=400) as load:
        for bad in ({"customer_id": 1}, [{"customer_id": -1}]):  # 422s: client errors in the panels
            path = "/predict/features" if isinstance(bad, dict) else "/predict/features/batch"
            answer = httpx.post(f"{lab.url}{path}", json=bad, timeout=10, trust_env=False, verify=tls_context())
            assert answer.status_code == 422
        requests = q.sel(catalogue.SERVING_REQUESTS.series, q.eq("model", lab.name),
                         q.eq("outcome", catalogue.OUTCOME_OK))
        assert procs_wait(lambda: bool(lab.prom.vector(f"sum(increase({requests}[1m])) > 100")), 120)
        run_failing_canary(lab)
        assert procs_wait(lambda: lab.alert_state("FerryModelCanaryRolledBack") == "firing", 90)
        drift = q.sel(catalogue.DRIFT_PSI.series, q.eq("model", lab.name))
        ratio = q.sel("model:ferry_serving_errors:ratio_rate1h", q.eq("model", lab.name))
        assert procs_wait(lambda: bool(lab.prom.vector(drift)) and bool(lab.prom.vector(ratio)), 90)
        time.sleep(25)  # two more scrapes and rule evaluations with the canary's series in place
    assert 500 in load.statuses and 200 in load.statuses
    boards = [dashboards.model_dashboard(lab.spec), *dashboards.platform_dashboards().values()]
    end = time.time()
    empty: dict[tuple[str, str], list[str]] = {}
    checked = 0
    for board in boards:
        for panel in panels(board):
            exprs = [target["expr"] for target in panel["targets"]]
            checked += 1
            if not any(has_data(lab.settings.prometheus_url, expr, started, end) for expr in exprs):
                empty[(board["title"], panel["title"])] = exprs
    print(f"{checked} panels queried; without data: {sorted(empty)}")
    assert checked >= 25
    unexpected = {key: exprs for key, exprs in empty.items() if key not in NO_LOCAL_DATA | COVERED_ELSEWHERE}
    assert unexpected == {}, f"panels without data after real traffic: {unexpected}"
    now_with_data = sorted(set(NO_LOCAL_DATA) - set(empty))
    assert now_with_data == [], f"these panels have data now; take them out of NO_LOCAL_DATA: {now_with_data}"


def test_every_panel_left_out_here_is_covered_by_another_live_test() -> None:
    """The panels this module does not require data from are either cluster-only (NO_LOCAL_DATA) or queried,
    with data required, by the named test, which exists and reads exactly these panels."""
    boards = [dashboards.model_dashboard(monitored_spec()), *dashboards.platform_dashboards().values()]
    every = {(board["title"], panel["title"]) for board in boards for panel in panels(board)}
    assert set(NO_LOCAL_DATA) | set(COVERED_ELSEWHERE) <= every  # no stale title
    assert not set(NO_LOCAL_DATA) & set(COVERED_ELSEWHERE)
    for where in set(COVERED_ELSEWHERE.values()):
        module, test = where.split("::")
        assert module == "tests/integration/test_pipeline.py" and callable(getattr(pipeline_tests, test, None)), where
    assert {title for _, title in COVERED_ELSEWHERE} == set(pipeline_tests.LOCAL_RUN_PANELS)


def procs_wait(condition: Any, timeout_s: float) -> bool:
    return procs.wait_until(condition, timeout_s, 1.0)
