"""`start_retraining` through the real local runner, on a tiny rendered Workflow whose container step is a
short Python command (no Ray, no MLflow): a new run name each time even though the spec's own run
succeeded, the trigger argument and label, and the locks that keep one training per model."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.contract import names
from ferry.local.alerts.retrain import RetrainingBusy, retrain_workflow, start_retraining
from ferry.local.engine.runner import load_run, run_workflow
from ferry.local.errors import LocalError
from ferry.local.supervisor import locks
from ferry.settings import Settings

MODEL = "demo"


def rendered(home: Path, code: str) -> Path:
    """gitops/rendered/local/demo as `ferry render` lays it out (Workflow + WorkflowTemplate)."""
    folder = home / "gitops/rendered/local" / MODEL
    folder.mkdir(parents=True)
    template = {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
                "metadata": {"name": f"{MODEL}-pipeline"},
                "spec": {"entrypoint": "pipeline",
                         "arguments": {"parameters": [{"name": "spec-hash", "value": "abc"},
                                                      {"name": "trigger", "value": "spec"}]},
                         "synchronization": {"mutexes": [{"name": names.mutex_name(MODEL)}]},
                         "templates": [{"name": "pipeline", "dag": {"tasks": [{"name": "train", "template": "train"}]}},
                                       {"name": "train", "container": {
                                           "image": "unused", "command": [sys.executable, "-c", code],
                                           "args": ["{{workflow.name}}", "{{workflow.parameters.trigger}}"]}}]}}
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": f"{MODEL}-abc", "labels": {names.LABEL_MODEL: MODEL},
                             "annotations": {"argocd.argoproj.io/sync-wave": "1"}},
                "spec": {"workflowTemplateRef": {"name": f"{MODEL}-pipeline"},
                         "arguments": {"parameters": [{"name": "spec-hash", "value": "abc"}]}}}
    (folder / "workflowtemplate.yaml").write_text(yaml.safe_dump(template))
    (folder / "workflow.yaml").write_text(yaml.safe_dump(workflow))
    return folder


def appender(path: Path) -> str:
    return f"import sys\nopen({str(path)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


def test_retraining_runs_the_rendered_workflow_again_under_a_new_name(settings: Settings, tmp_path: Path) -> None:
    trained = tmp_path / "trained.txt"
    folder = rendered(settings.home, appender(trained))
    assert run_workflow(folder, settings)["status"]["phase"] == "Succeeded"  # the spec's own run
    started: list[str] = []
    result = start_retraining(settings, MODEL, "drift on amount", trigger="drift", on_started=started.append)
    assert result.phase == "Succeeded" and started == [result.workflow]
    assert result.workflow.startswith(names.retrain_workflow_prefix(MODEL, "drift"))
    assert trained.read_text().splitlines() == [f"{MODEL}-abc spec", f"{result.workflow} drift"]
    run = load_run(settings, result.workflow)
    assert run["metadata"]["labels"][names.LABEL_TRIGGER] == "drift"
    assert run["metadata"]["annotations"] == {names.ANNOTATION_REASON: "drift on amount"}  # no Argo CD annotations
    second = start_retraining(settings, MODEL, "by hand")
    assert second.workflow != result.workflow and second.phase == "Succeeded"
    assert len(trained.read_text().splitlines()) == 3


def test_one_retraining_per_model_at_a_time(settings: Settings, tmp_path: Path) -> None:
    gate, inside = tmp_path / "gate", tmp_path / "inside"
    code = (f"import os, time\nopen({str(inside)!r}, 'w').close()\n"
            f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n")
    rendered(settings.home, code)
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(start_retraining(settings, MODEL, "first")))
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while not inside.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(RetrainingBusy, match="retraining run of demo"):
            start_retraining(settings, MODEL, "second")
    finally:
        gate.touch()
        runner.join(30)
    assert results and results[0].phase == "Succeeded"
    assert len(list((settings.state_dir / "retrain").iterdir())) == 1


def test_a_running_pipeline_of_the_model_blocks_retraining(settings: Settings, tmp_path: Path) -> None:
    rendered(settings.home, appender(tmp_path / "never.txt"))
    with locks.exclusive(locks.lock_path(settings, names.mutex_name(MODEL)), what="test", timeout_s=0), \
            pytest.raises(RetrainingBusy, match="pipeline run of demo is active"):
        start_retraining(settings, MODEL, "drift")
    assert not (tmp_path / "never.txt").exists()


def test_unknown_model_and_trigger_are_clear_errors(settings: Settings) -> None:
    with pytest.raises(LocalError, match=r"no rendered workflow for model 'nope'.*ferry render --env local"):
        start_retraining(settings, "nope", "x")
    with pytest.raises(LocalError, match="unknown trigger 'cron'"):
        start_retraining(settings, MODEL, "x", trigger="cron")


def test_retrain_workflow_replaces_the_trigger_argument() -> None:
    source = {"metadata": {"name": "m-abc", "labels": {"a": "b"}},
              "spec": {"arguments": {"parameters": [{"name": "spec-hash", "value": "abc"},
                                                    {"name": "trigger", "value": "spec"}]}}}
    result = retrain_workflow(source, "m-drift-1", "drift", "why")
    assert result["spec"]["arguments"]["parameters"] == [{"name": "spec-hash", "value": "abc"},
                                                         {"name": "trigger", "value": "drift"}]
    assert source["metadata"]["name"] == "m-abc"  # the rendered object is not changed
