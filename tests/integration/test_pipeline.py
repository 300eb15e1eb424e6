"""End to end on tiny data: `ferry up` runs the rendered Workflow through the local runner against a
real Ray head and a real MLflow server, registers exactly one version, and reconciles idempotently."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow.pytorch
import numpy as np
import pytest
from tests.support.local_stack import restored_environ, stopping
from typer.testing import CliRunner

from ferry.adapters.registry import Registry
from ferry.adapters.tls import tls_context
from ferry.cli.app import app
from ferry.contract import names
from ferry.local import reconcile
from ferry.local.engine.state import status_path
from ferry.local.supervisor import procs
from ferry.local.supervisor.service_defs import ray_auth_headers
from ferry.local.supervisor.services import (
    ferry_env,
    service_processes,
    start_services,
    stop_services,
    use_ray_client_env,
)
from ferry.serving.deploy import ask_example, deploy_local, serve_url
from ferry.serving.replay import ReplayLimits, ReplayWindow
from ferry.serving.replay_feedback import replay_served_model
from ferry.settings import Settings
from ferry.spec import load_spec_file, spec_hash

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
PORT_FIELDS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port",
               "prometheus_port", "alertmanager_port", "serve_port", "rollout_metrics_port",
               "receiver_port", "redis_port")
TINY = {"customers: 1000, terminals: 2000, days: 60, seed: 0": "customers: 150, terminals: 300, days: 40, seed: 0",
        'train_start: "2018-05-02"': 'train_start: "2018-04-16"', "epochs: 6": "epochs: 2",
        "num_samples: 4": "num_samples: 2", "max_concurrent: 2": "max_concurrent: 1",
        "grace_period: 2": "grace_period: 1",
        "{metric: auc_roc, min: 0.7}": "{metric: auc_roc, min: 0.0}",
        "{metric: average_precision, min: 0.2}": "{metric: average_precision, min: 0.0}"}
# The pipelines dashboard's local-runner panels: the run counter (ferry_pipeline_runs_total) comes from the
# receiver `ferry up` starts, so they have data only after local runs; test_monitoring_live.py, which runs
# none, leaves them to this module's test_pipelines_dashboard_shows_the_finished_local_runs.
PIPELINES_DASHBOARD = ROOT / "monitoring/generated/dashboards/ferry-pipelines.json"
LOCAL_RUN_PANELS = ("Local runs by phase", "Failed local runs (24h)")


# The spec's training.tune block (the lines indented under it).
TUNE_BLOCK = re.compile(r"\n    tune:\n(?:      .*\n)+")


def tiny_spec(name: str, tune: bool = True, **replace: str) -> str:
    """The committed spec made tiny. `tune=False` leaves its tune block out, for a scenario about what happens
    around training (a resumed run whose gate fails): the tune step costs over a minute per run here, and
    test_up_runs_pipeline_and_registers_one_version runs it."""
    text = (ROOT / "gitops/models/fraud-detector.yaml").read_text()
    for old, new in {**TINY, **replace}.items():
        assert old in text, old
        text = text.replace(old, new)
    if not tune:
        text, removed = TUNE_BLOCK.subn("\n", text)
        assert removed == 1, "the spec's tune block moved: update TUNE_BLOCK"
    return text.replace("name: fraud-detector", f"name: {name}").replace("route: /fraud-detector", f"route: /{name}")


def write_spec(home: Path, name: str, tune: bool = True, **replace: str) -> Path:
    path = home / "gitops/models" / f"{name}.yaml"
    path.write_text(tiny_spec(name, tune, **replace))
    return path


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("home")
    (home / "gitops/models").mkdir(parents=True)
    write_spec(home, "tiny")
    settings = Settings(home=home, ready_timeout_s=120, **{f: procs.free_port() for f in PORT_FIELDS})
    with restored_environ(), stopping(settings):  # the recommender's test connects this process to Ray to deploy
        start_services(settings)
        yield settings


def registry(settings: Settings) -> Registry:
    return Registry(settings.mlflow_uri)


def versions(settings: Settings, model: str) -> list:
    return list(registry(settings).client.search_model_versions(f"name = '{model}'"))


def test_up_runs_pipeline_and_registers_one_version(settings: Settings) -> None:
    result = reconcile.up(settings, ["tiny"])
    [outcome] = result.models
    assert outcome.phase == "Succeeded", outcome.message
    [version] = versions(settings, "tiny")
    spec, _ = load_spec_file(settings.home / "gitops/models/tiny.yaml")
    assert version.tags[names.TAG_SPEC_HASH] == spec_hash(spec.model)
    assert version.tags[names.TAG_WORKFLOW] == outcome.workflow
    assert version.tags[names.TAG_DATASET_DIGEST] and "metric.average_precision" in version.tags
    data = registry(settings).step_run("tiny", outcome.workflow, names.STEP_DATA)
    assert version.tags[names.TAG_LINEAGE_DATA_RUN] == data.info.run_id
    assert version.tags[names.TAG_LINEAGE_DATA_SOURCE] == spec.model.spec.data.source
    assert version.tags[names.TAG_LINEAGE_DATA_ROWS] == data.data.params["rows"]
    # The first version has no parent; a local run is in no container, so no image.
    assert version.tags.get(names.TAG_LINEAGE_PARENT, "") == version.tags.get(names.TAG_LINEAGE_IMAGE, "") == ""
    assert registry(settings).alias("tiny", names.ALIAS_CHAMPION).version == version.version
    assert outcome.outputs["evaluate.passed"] == "true" and outcome.outputs["rollout.decision"] == "promoted"
    state = json.loads(status_path(settings, outcome.workflow).read_text())
    assert {n["displayName"]: n["phase"] for n in state["status"]["nodes"].values()
            if n["type"] != "DAG" and "(" not in n["displayName"]} == {
        step: "Succeeded" for step in names.STEPS}
    # The local head's env reached Ray Train: no process per run for a node drain that never comes.
    actors = ray_actor_classes(settings)
    assert actors >= {"TrainController", "RayTrainWorker"} and "PreemptionWatcher" not in actors, actors


def ray_actor_classes(settings: Settings) -> set[str]:
    """Class names of every actor the head has seen, dead ones included (Ray's state API)."""
    answer = httpx.get(f"{settings.ray_dashboard_url}/api/v0/actors", params={"limit": 1000, "detail": "false"},
                       headers=ray_auth_headers(settings), timeout=30, trust_env=False, verify=tls_context())
    answer.raise_for_status()
    return {actor["class_name"] for actor in answer.json()["data"]["result"]["result"]}


def test_registered_model_loads_without_pickle_and_scores_any_batch(settings: Settings) -> None:
    mlflow.set_tracking_uri(settings.mlflow_uri)  # the process-wide URI wins over MLFLOW_TRACKING_URI
    model = mlflow.pytorch.load_model("models:/tiny@champion")
    import torch

    for rows in (1, 7, 64):
        scores = model(torch.zeros(rows, 15)).detach().numpy()
        assert scores.shape == (rows,) and np.all((scores >= 0) & (scores <= 1))


def test_second_up_does_nothing(settings: Settings) -> None:
    [outcome] = reconcile.up(settings, ["tiny"]).models
    assert outcome.action == "up-to-date"
    assert len(versions(settings, "tiny")) == 1


def test_rerun_of_register_step_creates_no_second_version(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ferry_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FERRY_OUTPUTS_DIR", str(settings.home / "out"))
    [outcome] = reconcile.up(settings, ["tiny"]).models
    spec = "gitops/rendered/local/tiny/spec.json"
    for step in ("register", "data", "evaluate"):
        result = CliRunner().invoke(app, ["step", step, "--spec", spec, "--run", outcome.workflow])
        assert result.exit_code == 0, result.output
    assert "register.model-version = 1" in CliRunner().invoke(
        app, ["step", "register", "--spec", spec, "--run", outcome.workflow]).output
    assert len(versions(settings, "tiny")) == 1


def test_serving_only_change_does_not_retrain(settings: Settings) -> None:
    write_spec(settings.home, "tiny", **{"max_batch_size: 32, wait_ms: 5": "max_batch_size: 16, wait_ms: 3"})
    [outcome] = reconcile.up(settings, ["tiny"]).models
    assert outcome.action == "up-to-date"
    assert len(versions(settings, "tiny")) == 1


def test_failing_step_reports_error_and_registers_nothing(settings: Settings) -> None:
    write_spec(settings.home, "tiny-broken", **{'train_start: "2018-05-02"': 'train_start: "2019-06-01"'})
    [outcome] = reconcile.up(settings, ["tiny-broken"]).models
    assert outcome.phase == "Failed"
    assert "split" in outcome.message and "empty" in outcome.message
    assert versions(settings, "tiny-broken") == []
    (settings.home / "gitops/models/tiny-broken.yaml").unlink()


def panel_exprs(title: str) -> list[str]:
    """The queries of a panel of the committed pipelines dashboard, the JSON Grafana loads."""
    board = json.loads(PIPELINES_DASHBOARD.read_text())
    [panel] = [p for p in board["panels"] if p.get("title") == title]
    return [target["expr"] for target in panel["targets"]]


def panel_peaks(settings: Settings, title: str, since: float) -> dict[str, float]:
    """Each series' largest value in a panel, queried over [since, now] as Grafana does ($__rate_interval =
    1m, four scrape intervals), keyed by its labels' values ("tiny Succeeded")."""
    peaks: dict[str, float] = {}
    for expr in panel_exprs(title):
        response = httpx.get(f"{settings.prometheus_url}/api/v1/query_range", timeout=30, trust_env=False,
                             params={"query": expr.replace("$__rate_interval", "1m"), "start": since,
                                     "end": time.time(), "step": "10s"}, verify=tls_context())
        body = response.json()
        assert body.get("status") == "success", (expr, body)
        for series in body["data"]["result"]:
            key = " ".join(value for _, value in sorted(series["metric"].items()))
            peaks[key] = max(float(value) for _, value in series["values"])
    return peaks


def instant(settings: Settings, expr: str) -> list[float]:
    response = httpx.get(f"{settings.prometheus_url}/api/v1/query", params={"query": expr}, timeout=30,
                         trust_env=False, verify=tls_context())
    return [float(series["value"][1]) for series in response.json()["data"]["result"]]


def test_pipelines_dashboard_shows_the_finished_local_runs(settings: Settings) -> None:
    """The local-runner panels' exact queries, against the Prometheus `ferry up` started (it scrapes the
    receiver), show tiny's Succeeded run, then a Failed run of tiny (its data step finds an empty split).

    The failure shown is tiny's: a counter's increase needs a sample before it, and the receiver exports a
    model's series from its first run on; tiny's were scraped at 0 during its minute-long first run, while
    tiny-broken's run (above) fails in about one 10 s scrape interval, so its only sample may already be 1."""
    since = time.time() - 3600  # everything this module's Prometheus holds
    assert procs.wait_until(lambda: instant(settings, 'ferry_pipeline_runs_total{model="tiny",phase="Failed"}')
                            == [0.0], 30, 1)
    spec_path = settings.home / "gitops/models/tiny.yaml"
    committed = spec_path.read_text()
    write_spec(settings.home, "tiny", **{'train_start: "2018-05-02"': 'train_start: "2019-06-01"'})
    try:
        [outcome] = reconcile.up(settings, ["tiny"]).models
    finally:
        spec_path.write_text(committed)
    assert outcome.phase == "Failed" and "empty" in outcome.message, outcome

    def shown() -> bool:
        by_phase, failed = (panel_peaks(settings, title, since) for title in LOCAL_RUN_PANELS)
        return (by_phase.get("tiny Succeeded", 0) > 0 and by_phase.get("tiny Failed", 0) > 0
                and failed.get("tiny", 0) > 0 and "tiny-broken" in failed)

    assert procs.wait_until(shown, 60, 2), {t: panel_peaks(settings, t, since) for t in LOCAL_RUN_PANELS}


def wait_for_node(settings: Settings, workflow: str, step: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        path = status_path(settings, workflow)
        if path.exists():
            nodes = json.loads(path.read_text())["status"].get("nodes", {}).values()
            if any(n["displayName"] == step and n["phase"] == "Succeeded" for n in nodes):
                return
        time.sleep(0.5)
    pytest.fail(f"{step} of {workflow} did not succeed within {timeout_s}s")


def test_killed_runner_resumes_without_redoing_steps(settings: Settings) -> None:
    """Two behaviours of one run (a run trains for half a minute here): `ferry up` killed after the data step
    resumes the run without redoing it, and the resumed run's evaluate fails its gate (AUC ≥ 0.9999), so the run
    succeeds with register and rollout skipped and nothing registered."""
    gate = {"{metric: auc_roc, min: 0.7}": "{metric: auc_roc, min: 0.9999}"}
    spec_path = write_spec(settings.home, "tiny-resume", tune=False, **{"epochs: 6": "epochs: 3", **gate})
    spec, _ = load_spec_file(spec_path)
    workflow = names.workflow_name("tiny-resume", spec_hash(spec.model))
    env = {**os.environ, **ferry_env(settings)}
    proc = subprocess.Popen([sys.executable, "-m", "ferry.cli.app", "up", "tiny-resume"], env=env,
                            cwd=settings.home, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_node(settings, workflow, "data")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    data_run = registry(settings).step_run("tiny-resume", workflow, "data")
    [outcome] = reconcile.up(settings, ["tiny-resume"]).models
    assert outcome.phase == "Succeeded", outcome.message
    assert outcome.outputs["data.mlflow-run"] == data_run.info.run_id
    assert outcome.outputs["evaluate.passed"] == "false" and "gate auc_roc" in outcome.outputs["evaluate.reason"]
    assert versions(settings, "tiny-resume") == []
    skipped = {n["displayName"]: n["phase"] for n in json.loads(status_path(settings, workflow).read_text())[
        "status"]["nodes"].values() if n["displayName"] in (names.STEP_REGISTER, names.STEP_ROLLOUT)}
    assert skipped == {names.STEP_REGISTER: "Skipped", names.STEP_ROLLOUT: "Skipped"}, skipped
    spec_path.unlink()


def tiny_recommender(name: str) -> str:
    """The committed recommender spec on 150 users, 3 epochs, no tuning and gates any model passes; its canary
    mirrors for 2 minutes, checks every 5 s and judges on 200 clicks."""
    text = (ROOT / "gitops/models/recommender.yaml").read_text()
    replace = {"holdout_share: 0.05}": "holdout_share: 0.05, max_users: 150}", "epochs: 20": "epochs: 3",
               "min: 0.13}": "min: 0.0}", "min: 0.08}": "min: 0.0}",
               "name: recommender": f"name: {name}", "route: /recommender": f"route: /{name}",
               "interval: 30s": "interval: 5s", "shadow: {duration: 10m,": "shadow: {duration: 2m,",
               "min_labelled: 1000, min_positives: 50": "min_labelled: 200, min_positives: 10"}
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    text, removed = TUNE_BLOCK.subn("\n", text)
    assert removed == 1
    return text


def test_the_recommender_rides_the_same_pipeline_to_served_recommendations(settings: Settings) -> None:
    """The second workload through the same rendered Workflow, registry and router: a model whose registered
    program takes user ids (a tuple input example, no drift reference) and a `/recommend` route."""
    (settings.home / "gitops/models/tiny-recommender.yaml").write_text(tiny_recommender("tiny-recommender"))
    [outcome] = reconcile.up(settings, ["tiny-recommender"]).models
    assert outcome.phase == "Succeeded", outcome.message
    assert outcome.outputs["rollout.decision"] == "promoted"
    assert {"ndcg-at-10", "recall-at-10"} <= {key.split(".", 1)[1] for key in outcome.outputs}
    [version] = versions(settings, "tiny-recommender")
    assert names.TAG_REFERENCE not in version.tags and "metric.ndcg_at_10" in version.tags
    spec, _ = load_spec_file(settings.home / "gitops/models/tiny-recommender.yaml")
    with restored_environ():
        use_ray_client_env(settings)
        url = deploy_local(settings, spec.model)
        path, answer = ask_example(settings, spec.model, url)
    assert path == "/recommend" and answer["version"] == version.version and answer["fallback"] is False
    assert len(answer["items"]) == 10
    batch = httpx.post(f"{url}/recommend/batch", json=[{"user_id": 1, "k": 3}, {"user_id": 10**9, "k": 2}],
                       timeout=30, trust_env=False, verify=tls_context())
    assert batch.status_code == 200, batch.text
    assert [(len(a["items"]), a["fallback"]) for a in batch.json()["answers"]] == [(3, False), (2, True)]
    bad = httpx.post(f"{url}/recommend", json={"user_id": 1, "k": 0}, timeout=30, trust_env=False, verify=tls_context())
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "k"]


def test_a_worse_recommender_is_rolled_back_on_the_clicks_that_follow_its_recommendations(
        settings: Settings) -> None:
    """The canary judged on feedback, end to end: a retrained version that learned almost nothing (one epoch at a
    learning rate 500 times smaller) goes through the same Workflow into a shadow stage; the held-out ratings are
    replayed as requests and clicks through the served router while the rollout step runs; the step rolls the
    version back on the hit rate, and the champion keeps serving."""
    path = settings.home / "gitops/models/tiny-recommender.yaml"
    champion = registry(settings).alias("tiny-recommender", names.ALIAS_CHAMPION).version
    text = path.read_text()
    path.write_text(text.replace("epochs: 3", "epochs: 1").replace("lr: 0.005", "lr: 1.0e-5"))
    spec, _ = load_spec_file(path)
    url = serve_url(settings, spec.model)
    ran: dict[str, reconcile.UpResult] = {}
    upping = threading.Thread(target=lambda: ran.update(up=reconcile.up(settings, ["tiny-recommender"])))
    upping.start()

    def mirrored() -> bool:  # the router has loaded the new version as challenger, mirroring at weight 0
        info = httpx.get(f"{url}/info", timeout=5, trust_env=False, verify=tls_context()).json()
        return info["challenger"] not in (None, champion) and info["weight"] == 0

    assert procs.wait_until(mirrored, 300, 1.0), "the new version never reached its shadow stage"
    # Traffic goes on, as in production: a check counts toward the failure limit only when it saw new data, so
    # the held-out history is sent again while the rollout runs (a repeated click counts once; bounded passes).
    for _ in range(8):
        report = replay_served_model(settings, spec.model, {}, ReplayWindow(), ReplayLimits(rate_per_s=2000,
                                                                                             timeout_s=60))
        assert report.scored == report.sent > 200 and report.labels["stored"] == report.sent and not report.failed
        upping.join(10)
        if not upping.is_alive():
            break
    upping.join(120)
    assert not upping.is_alive(), "the rollout did not end while its clicks came in"
    [outcome] = ran["up"].models
    assert outcome.outputs["rollout.decision"] == names.STATE_ROLLED_BACK, outcome.outputs
    assert "hit_rate" in outcome.outputs["rollout.reason"] and "worse" in outcome.outputs["rollout.reason"]
    assert registry(settings).alias("tiny-recommender", names.ALIAS_CHAMPION).version == champion
    answer = httpx.post(f"{url}/recommend", json={"user_id": 1}, timeout=30, trust_env=False,
                        verify=tls_context()).json()
    assert answer["version"] == champion


def test_down_leaves_no_process_and_no_port(settings: Settings) -> None:
    stop_services(settings)
    assert not any(service_processes(settings).values())
    for field in ("mlflow_port", "ray_port", "ray_dashboard_port"):
        assert procs.port_free(getattr(settings, field)), field
