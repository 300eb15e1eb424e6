"""The warm step starter (ferry.local.engine.warm, zygote): a forked step is the process a fresh one would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.local.engine import executors, warm
from ferry.local.engine.runner import run_workflow
from ferry.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
CHILD = "tests.support.warm_child"


def step_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.fixture(scope="module")
def starter() -> Any:
    started = warm.Starter(warm.starter_env(step_env(FERRY_OUTPUTS_DIR="/unused")), str(ROOT))
    yield started
    started.close()


def run(starter: warm.Starter, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 30) -> tuple[int, str]:
    log = tmp_path / "step.log"
    process = starter.start(CHILD, list(args), env or step_env(FERRY_OUTPUTS_DIR=str(tmp_path)), str(tmp_path),
                            str(log))
    code = process.wait(timeout)
    return code, log.read_text() if log.exists() else ""


def test_a_forked_step_has_its_own_arguments_environment_folder_session_and_files(
        starter: warm.Starter, tmp_path: Path) -> None:
    env = step_env(FERRY_OUTPUTS_DIR=str(tmp_path), ONLY_THIS_STEP="yes")
    env.pop("HOME", None)  # in the starter's environment, not the step's
    code, log = run(starter, tmp_path, "report", "--flag", env=env)
    seen = json.loads(log.splitlines()[0])
    assert code == 0 and log.splitlines()[1] == "to stderr"
    assert seen["argv"] == ["report", "--flag"] and seen["name"] == "__main__"
    assert seen["cwd"] == str(tmp_path) and seen["env"] == env
    assert seen["session_leader"] and seen["stdin"] == ""
    assert seen["title"] == f"{sys.executable} -m {CHILD} report --flag"  # what `ps` shows: the step's command


def test_each_forked_step_draws_its_own_random_numbers(starter: warm.Starter, tmp_path: Path) -> None:
    draws = set()
    for n in range(2):
        (tmp_path / str(n)).mkdir()
        draws.add(json.loads(run(starter, tmp_path / str(n), "report")[1].splitlines()[0])["draw"])
    assert len(draws) == 2


@pytest.mark.parametrize(("args", "code", "text"), [
    (("exit", "3"), 3, ""),
    (("raise",), 1, "RuntimeError: boom from the step"),
    (("shutdown",), 0, "thread finished\natexit ran"),
])
def test_a_forked_step_ends_as_an_interpreter_would(starter: warm.Starter, tmp_path: Path, args: tuple[str, ...],
                                                     code: int, text: str) -> None:
    ended, log = run(starter, tmp_path, *args)
    assert ended == code and text in log


def test_a_killed_step_reports_its_signal_and_its_group_can_be_stopped(starter: warm.Starter, tmp_path: Path) -> None:
    process = starter.start(CHILD, ["sleep", "60"], step_env(FERRY_OUTPUTS_DIR=str(tmp_path)), str(tmp_path),
                            str(tmp_path / "log"))
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(0.2)
    assert process.poll() is None
    executors._terminate(process)  # what the runner does at a deadline or a stop: SIGTERM to the group
    assert process.returncode == -signal.SIGTERM


def test_runs_share_a_starter_that_lingers_for_the_next_then_ends(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm, "LINGER_S", 1.0)
    env = step_env(FERRY_OUTPUTS_DIR=str(tmp_path))
    with warm.STARTERS.lease() as first, warm.STARTERS.lease() as second:
        shared = first.starter(env, str(tmp_path))
        assert second.starter({**env, "FERRY_OUTPUTS_DIR": "/elsewhere"}, str(tmp_path)) is shared
        assert warm.env_key({**env, "OTHER": "1"}) != warm.env_key(env)  # another environment: another starter
    with warm.STARTERS.lease() as next_run:  # within LINGER_S of the last run: no second import
        assert next_run.starter(env, str(tmp_path)) is shared
        running = shared.start(CHILD, ["sleep", "2"], env, str(tmp_path), str(tmp_path / "log"))
    assert running.wait(30) == 0  # the end of the runs does not stop a step, and its end is still reported
    deadline = time.monotonic() + 30
    while shared.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not shared.alive()


def test_a_step_whose_starter_was_killed_ends_when_it_ends_and_says_its_status_was_lost(tmp_path: Path) -> None:
    doomed = warm.Starter(warm.starter_env(step_env()), str(tmp_path))
    # It runs until this test ends it: a step that ended on its own during a stalled second (a loaded machine)
    # would pass for one still running.
    process = doomed.start(CHILD, ["sleep", "60"], step_env(), str(tmp_path), str(tmp_path / "log"))
    os.kill(doomed._proc.pid, signal.SIGKILL)
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(1.0)  # it still runs: not reported ended (a runner would start it again beside itself)
    os.kill(process.pid, signal.SIGKILL)  # now it ends, with nobody left to say how
    assert process.wait(30) == warm.LOST_EXIT and process.lost


def test_a_container_step_whose_starter_was_killed_is_a_transient_error(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner retries it (OnTransientError), as Argo retries a pod whose status it lost, instead of calling
    it failed or succeeded on an exit code nobody saw."""
    import threading

    doomed = warm.Starter(warm.starter_env(step_env()), str(tmp_path))

    def start_then_lose_the_starter(attempt: executors.Attempt, argv: list[str], env: dict[str, str]) -> Any:
        # The step runs until the starter is gone, then this ends it: a step that ended on its own during a stalled
        # second (a loaded machine) would have been reported by its starter, as it should be.
        process = doomed.start(CHILD, ["sleep", "60"], step_env(), str(tmp_path), str(attempt.log_path))
        os.kill(doomed._proc.pid, signal.SIGKILL)
        doomed._proc.wait(30)
        os.kill(process.pid, signal.SIGKILL)
        return process

    monkeypatch.setattr(executors, "_start_warm", start_then_lose_the_starter)
    attempt = executors.Attempt(Settings(home=tmp_path), "demo-0123456789", "help", 0,
                                {"container": {"image": "unused", "command": ["ferry", "--help"]}},
                                tmp_path / "help.log", tmp_path / "outputs", threading.Event())
    result = executors.run_container(attempt)
    assert (result.phase, result.transient) == ("Error", True) and "exit status was lost" in result.message


def test_a_starter_that_cannot_start_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm, "STARTER_ARGV", (sys.executable, "-c", "import sys; sys.exit(3)"))
    broken = warm.Starter(step_env(), str(tmp_path))
    with pytest.raises(warm.StarterUnavailable, match="exited"):
        broken.start(CHILD, ["exit", "0"], step_env(), str(tmp_path), str(tmp_path / "log"))


def ferry_workflow(folder: Path) -> Path:
    """One container step running ferry's CLI (`ferry --help`): what the runner starts warm."""
    template = {"name": "help", "container": {"image": "unused", "command": ["ferry", "--help"], "args": []}}
    spec = {"entrypoint": "pipeline", "templates": [{"name": "pipeline", "dag": {"tasks": [
        {"name": "help", "template": "help"}]}}, template]}
    folder.mkdir(parents=True)
    (folder / "workflowtemplate.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "demo-pipeline"},
         "spec": spec}))
    (folder / "workflow.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "demo-0123456789"},
         "spec": {"workflowTemplateRef": {"name": "demo-pipeline"}}}))
    return folder


@pytest.mark.parametrize("warm_steps", [True, False])
def test_the_runner_starts_ferrys_steps_warm_unless_told_not_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 warm_steps: bool) -> None:
    forked: list[int] = []
    start = warm.Starter.start

    def spy(self: warm.Starter, *args: Any) -> warm.WarmProcess:
        process = start(self, *args)
        forked.append(process.pid)
        return process

    monkeypatch.setattr(warm.Starter, "start", spy)
    settings = Settings(home=tmp_path / "home", warm_steps=warm_steps)
    result = run_workflow(ferry_workflow(tmp_path / "wf"), settings)
    assert result["status"]["phase"] == "Succeeded", result["status"]
    log = (settings.state_dir / "runs/demo-0123456789/logs/help.log").read_text()
    assert "Usage" in log and "new process" not in log
    assert "RuntimeWarning" not in log  # runpy's, about running a module the starter preloaded
    assert len(forked) == (1 if warm_steps else 0)


def test_what_ray_writes_into_the_runners_environment_reaches_no_step(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`ferry up` imports Ray and calls ray.init() (Serve deploys) while its runs go on: the steps after that get
    the same environment, and so the same starter, as the steps before."""
    monkeypatch.delenv("RAY_CLIENT_MODE", raising=False)
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    settings = Settings(home=tmp_path)
    before = executors.step_env(settings, [], tmp_path / "outputs")
    monkeypatch.setenv("RAY_CLIENT_MODE", "0")  # import ray (ray/_private/client_mode_hook.py)
    monkeypatch.setenv("PYTHONBREAKPOINT", "ray.util.rpdb._driver_set_trace")  # ray.init() (ray/_private/worker.py)
    after = executors.step_env(settings, [], tmp_path / "other-outputs")
    assert warm.env_key(after) == warm.env_key(before) and "PYTHONBREAKPOINT" not in after
    monkeypatch.setenv("PYTHONBREAKPOINT", "ipdb.set_trace")  # the user's own setting is theirs
    assert executors.step_env(settings, [], tmp_path / "outputs")["PYTHONBREAKPOINT"] == "ipdb.set_trace"


def test_up_starts_the_starter_with_the_services_only_when_a_spec_has_not_run_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.contract import names
    from ferry.local import reconcile
    from ferry.local.engine import state
    from ferry.spec import load_specs
    from ferry.spec.hashing import spec_hash

    created: list[dict[str, str]] = []

    class Recorded:
        leases = 0

        def __init__(self, env: dict[str, str], cwd: str) -> None:
            created.append(env)

        def alive(self) -> bool:
            return True

        def close(self) -> None:
            pass

    monkeypatch.setattr(warm, "Starter", Recorded)
    monkeypatch.setattr(warm, "STARTERS", warm._Starters())
    [spec], problems = load_specs([ROOT / "gitops/models/fraud-detector-lite.yaml"])
    assert not problems
    settings = Settings(home=tmp_path)
    with reconcile._prewarmed(settings, [spec]):  # never ran here: the starter imports while services start
        assert len(created) == 1
    assert warm.env_key(created[0]) == warm.env_key(executors.step_env(settings, [], tmp_path / "outputs"))
    path = state.status_path(settings, names.workflow_name(spec.name, spec_hash(spec.model)))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"status": {"phase": "Succeeded"}}))
    with reconcile._prewarmed(settings, [spec]):  # nothing to run: no starter
        assert len(created) == 1
    with reconcile._prewarmed(settings.model_copy(update={"warm_steps": False}), []):
        assert len(created) == 1
