"""The local runner against a real local Ray head (started by services.py, token auth on): a RayJob
resource step is submitted through the Job Submission API, attached to on resume, and a FAILED job
gets a fresh submission id when the run is retried."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.contract import names
from ferry.local.engine.state import node_id
from ferry.local.supervisor import procs
from ferry.local.supervisor.service_defs import ray_auth_headers, ray_temp_dir
from ferry.local.supervisor.services import start_services, stop_services
from ferry.render.rayjob import RAYJOB_FAILURE_CONDITION, RAYJOB_SUCCESS_CONDITION
from ferry.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PY = shlex.quote(sys.executable)
HELLO = (f"{PY} -c \"import os, ray; ray.init(); "
         "print('hi from ray', os.environ['MLFLOW_TRACKING_URI'], os.environ['RAY_AUTH_MODE'], "
         "ray.cluster_resources().get('CPU'))\"")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    ports = {f: procs.free_port() for f in ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port",
                                              "ray_client_port")}
    settings = Settings(home=tmp_path_factory.mktemp("home"), ray_cpus=1, ready_timeout_s=90, **ports)  # type: ignore[arg-type]
    try:
        assert [s.state for s in start_services(settings, include=["ray"])] == ["started"]
        yield settings
    finally:
        stop_services(settings)
        shutil.rmtree(ray_temp_dir(settings), ignore_errors=True)


def write_workflow(folder: Path, name: str, entrypoint: str, ray_deadline_s: int = 120) -> Path:
    """prepare (container) → train (RayJob resource template, shaped like ferry's rendered ones)."""
    manifest = {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"generateName": names.rayjob_prefix("rj", "train")},
        "spec": {"entrypoint": entrypoint,
                 "runtimeEnvYAML": yaml.safe_dump({"env_vars": {"MLFLOW_TRACKING_URI": "http://mlflow.cluster:5000",
                                                                "FROM_MANIFEST": "kept"}}),
                 "activeDeadlineSeconds": ray_deadline_s, "backoffLimit": 0, "submissionMode": "K8sJobMode"},
    }
    templates = [
        {"name": "pipeline", "dag": {"tasks": [{"name": "prepare", "template": "prepare"},
                                                {"name": "train", "template": "train", "dependencies": ["prepare"]}]}},
        {"name": "prepare", "container": {"image": "unused", "command": [sys.executable, "-c", "print('prepared')"]}},
        {"name": "train", "resource": {"action": "create", "setOwnerReference": True,
                                       "manifest": yaml.safe_dump(manifest, sort_keys=False, width=1000),
                                       "successCondition": RAYJOB_SUCCESS_CONDITION,
                                       "failureCondition": RAYJOB_FAILURE_CONDITION},
         "activeDeadlineSeconds": ray_deadline_s + 60,
         "outputs": {"parameters": [{"name": "ray-job", "valueFrom": {"jsonPath": "{.metadata.name}"}}]},
         "retryStrategy": {"limit": "2", "retryPolicy": "OnTransientError",
                           "backoff": {"duration": "10s", "factor": "2", "maxDuration": "5m"}}},
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workflowtemplate.yaml").write_text(yaml.safe_dump({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "rj-pipeline"},
        "spec": {"entrypoint": "pipeline", "arguments": {"parameters": [{"name": "spec-hash", "value": "1"}]},
                 "synchronization": {"mutexes": [{"name": "ferry-model-rj"}]}, "templates": templates}}))
    (folder / "workflow.yaml").write_text(yaml.safe_dump({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
        "spec": {"workflowTemplateRef": {"name": "rj-pipeline"}}}))
    return folder


def train_node(result: dict[str, Any]) -> dict[str, Any]:
    name = result["metadata"]["name"]
    return result["status"]["nodes"][node_id(name, f"{name}.train")]


def jobs_of(settings: Settings, workflow: str) -> dict[str, str]:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(settings.ray_dashboard_url, headers=ray_auth_headers(settings))
    return {j.submission_id: str(j.status) for j in client.list_jobs()
            if (j.submission_id or "").startswith(f"{workflow}-")}


def test_rayjob_step_runs_on_local_head(settings: Settings, tmp_path: Path) -> None:
    from ferry.local.engine.runner import node_log_path, run_workflow

    folder = write_workflow(tmp_path / "wf", "rj-ok", HELLO)
    result = run_workflow(folder, settings, backoff_scale=0.01)
    assert result["status"]["phase"] == "Succeeded", result["status"]["message"]
    node = train_node(result)
    job_id = names.ray_submission_id("rj-ok", "train")
    assert node["outputs"]["parameters"] == [{"name": "ray-job", "value": job_id}]
    log = node_log_path(settings, "rj-ok", "train").read_text()
    # The driver connected to the token-protected head, and got the local MLflow URI, not the manifest's.
    assert f"hi from ray {settings.mlflow_uri} token 1.0" in log
    assert jobs_of(settings, "rj-ok") == {job_id: "SUCCEEDED"}

    # Resume with the run state gone: the runner attaches to the SUCCEEDED job instead of resubmitting.
    shutil.rmtree(settings.runs_dir / "rj-ok")
    again = run_workflow(folder, settings, backoff_scale=0.01)
    assert again["status"]["phase"] == "Succeeded"
    assert "attached" in node_log_path(settings, "rj-ok", "train").read_text()
    assert jobs_of(settings, "rj-ok") == {job_id: "SUCCEEDED"}


def test_failed_rayjob_fails_the_run_and_a_rerun_uses_a_new_id(settings: Settings, tmp_path: Path) -> None:
    from ferry.local.engine.runner import run_workflow

    folder = write_workflow(tmp_path / "wf", "rj-bad", f"{PY} -c \"print('boom'); raise SystemExit(3)\"")
    result = run_workflow(folder, settings, backoff_scale=0.01)
    status = result["status"]
    assert status["phase"] == "Failed"
    assert "train" in status["message"] and "FAILED" in status["message"]
    assert len(train_node(result)["children"]) == 1  # FAILED is not transient: OnTransientError does not retry
    base = names.ray_submission_id("rj-bad", "train")
    assert jobs_of(settings, "rj-bad") == {base: "FAILED"}

    run_workflow(folder, settings, backoff_scale=0.01)  # `argo retry`: the failed step runs again
    assert jobs_of(settings, "rj-bad") == {base: "FAILED", f"{base}-r1": "FAILED"}


def test_rayjob_past_its_deadline_is_stopped_and_fails_the_step(settings: Settings, tmp_path: Path) -> None:
    """KubeRay's Failed/DeadlineExceeded (jobStatus still RUNNING) meets the rendered failure condition."""
    from ferry.local.engine.runner import run_workflow

    folder = write_workflow(tmp_path / "wf", "rj-slow", f"{PY} -c \"import time; time.sleep(120)\"", ray_deadline_s=3)
    started = time.monotonic()
    result = run_workflow(folder, settings, backoff_scale=0.01)
    status = result["status"]
    assert status["phase"] == "Failed"
    assert "exceeded activeDeadlineSeconds" in status["message"] and "Failed" in status["message"]
    assert time.monotonic() - started < 60
    base = names.ray_submission_id("rj-slow", "train")
    deadline = time.monotonic() + 30
    while jobs_of(settings, "rj-slow") != {base: "STOPPED"} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs_of(settings, "rj-slow") == {base: "STOPPED"}


def test_in_process_client_after_importing_ray(settings: Settings) -> None:
    """use_ray_client_env fixes a process that imported Ray before it had the token variables."""
    code = ("import ray, sys; from pathlib import Path; from ferry.settings import Settings; "
            "from ferry.local.supervisor.services import use_ray_client_env; "
            f"s = Settings(home=Path({str(settings.home)!r}), ray_port={settings.ray_port}); "
            "use_ray_client_env(s); ray.init(address=s.ray_address); print('CPU', ray.cluster_resources()['CPU'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root / "platform" / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "CPU 1.0" in done.stdout, done.stderr[-2000:]
