"""The local runner without Ray or network: parameters, `when`, retries, DAG order, status, resume.

Workflows here are tiny hand-written Argo objects whose container steps are short Python commands, so
the runner really starts subprocesses, reads output files and persists its state.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from ferry.contract import names
from ferry.local.engine import expr
from ferry.local.engine.argo import RetryStrategy, Task, load_workflow, parse_duration, topological
from ferry.local.engine.executors import local_command, step_env
from ferry.local.engine.rayjobs import local_entrypoint, submission_id
from ferry.local.engine.runner import list_runs, load_run, node_log_path, render_progress, run_workflow
from ferry.local.engine.state import node_id
from ferry.local.errors import LocalError
from ferry.local.supervisor import locks
from ferry.local.supervisor.services import ferry_env
from ferry.settings import Settings

PY = sys.executable
RETRY = {"limit": "3", "retryPolicy": "Always",
         "expression": 'lastRetry.status == "Error" || asInt(lastRetry.exitCode) == 75',
         "backoff": {"duration": "10s", "factor": "2", "maxDuration": "5m"}}
FAST = 0.001  # backoff_scale: 10 s of backoff becomes 10 ms


# --- helpers -------------------------------------------------------------------------------------------

def step(name: str, code: str, *, outputs: tuple[str, ...] = (), retry: bool = False,
         args: list[str] | None = None, env: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A container template running `code` with python; sys.argv[1:] are `args`."""
    template: dict[str, Any] = {
        "name": name,
        "container": {"image": "unused", "command": [PY, "-c", code], "args": args or [], "env": env or []},
        "outputs": {"parameters": [{"name": o, "valueFrom": {"path": f"/tmp/ferry-outputs/{o}", "default": ""}}
                                   for o in outputs]},
    }
    if retry:
        template["retryStrategy"] = RETRY
    return template


WRITE = "import os,sys\ndef out(k,v): open(os.path.join(os.environ['FERRY_OUTPUTS_DIR'],k),'w').write(v+'\\n')\n"


def count(path: Path) -> str:
    """Python that appends one line to `path` (how tests prove a step ran, and how often)."""
    return f"open({str(path)!r},'a').write('x\\n')\n"


def runs_of(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def write_workflow(folder: Path, tasks: list[dict[str, Any]], templates: list[dict[str, Any]], *,
                   name: str = "demo-0123456789", params: dict[str, str] | None = None,
                   overrides: dict[str, str] | None = None, mutex: str | None = "ferry-model-demo") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "entrypoint": "pipeline",
        "arguments": {"parameters": [{"name": k, "value": v} for k, v in (params or {"spec-hash": "abc"}).items()]},
        "templates": [{"name": "pipeline", "dag": {"tasks": tasks}}, *templates],
    }
    if mutex:
        spec["synchronization"] = {"mutexes": [{"name": mutex}]}
    template = {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
                "metadata": {"name": "demo-pipeline"}, "spec": spec}
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": name, "namespace": "ferry", "labels": {"ferry.dev/model": "demo"}},
                "spec": {"workflowTemplateRef": {"name": "demo-pipeline"},
                         "arguments": {"parameters": [{"name": k, "value": v}
                                                      for k, v in (overrides or {}).items()]}}}
    (folder / "workflowtemplate.yaml").write_text("# generated\n" + yaml.safe_dump(template, sort_keys=False))
    (folder / "workflow.yaml").write_text(yaml.safe_dump(workflow, sort_keys=False))
    return folder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def task_node(result: dict[str, Any], task: str) -> dict[str, Any]:
    name = result["metadata"]["name"]
    return result["status"]["nodes"][node_id(name, f"{name}.{task}")]


def outputs(node: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in node["outputs"]["parameters"]}


# --- pure logic ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("true == true", True), ("false == true", False), (" == true", False), ("true", True), ("", False),
    ("'a b' == \"a b\"", True), ("1.0 == 1", True), ("2 > 10", False), ("a != b && (x == x || y)", True),
    ("!(true == true) || false", False), ("true == true && false == true", False),
])
def test_when_evaluation(text: str, expected: bool) -> None:
    assert expr.evaluate(text) is expected


def test_when_rejects_what_it_cannot_parse() -> None:
    with pytest.raises(LocalError, match="missing '\\)'"):
        expr.evaluate("(a == b")
    with pytest.raises(LocalError, match="not numbers"):
        expr.evaluate("abc < 3")


def test_substitution_names_unknown_variables() -> None:
    scope = {"workflow.name": "wf", "workflow.parameters.spec-hash": "abc"}
    assert expr.substitute("{{workflow.name}}/{{ workflow.parameters.spec-hash }}", scope, "x") == "wf/abc"
    with pytest.raises(LocalError, match=r"task t: unknown variable \{\{tasks.a.outputs.parameters.p\}\}"):
        expr.substitute("{{tasks.a.outputs.parameters.p}}", scope, "task t")
    with pytest.raises(LocalError, match="not supported"):
        expr.substitute("{{=sprig.upper('a')}}", scope, "task t")


def test_retry_expression_and_backoff_arithmetic() -> None:
    retry = RetryStrategy.from_template({"name": "s", "retryStrategy": RETRY})
    assert retry is not None and retry.limit == 3 and retry.policy == "Always"
    assert [retry.delay_s(n) for n in range(6)] == [10, 20, 40, 80, 160, 300]  # capped at maxDuration 5m
    assert retry.delay_s(2, scale=0.5) == 20
    common = {"message": "", "transient": False}
    assert retry.allows(retries_done=0, phase="Failed", exit_code=75, **common)
    assert not retry.allows(retries_done=0, phase="Failed", exit_code=1, **common)
    assert retry.allows(retries_done=2, phase="Error", exit_code=None, **common)
    assert not retry.allows(retries_done=3, phase="Failed", exit_code=75, **common)  # limit reached
    transient = RetryStrategy.from_template(
        {"name": "r", "retryStrategy": {"limit": "2", "retryPolicy": "OnTransientError"}})
    assert transient is not None
    assert transient.allows(retries_done=0, phase="Error", exit_code=None, message="", transient=True)
    assert not transient.allows(retries_done=0, phase="Error", exit_code=None, message="", transient=False)
    assert not transient.allows(retries_done=0, phase="Failed", exit_code=1, message="", transient=False)


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("7", 7)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_dag_order_and_cycles() -> None:
    tasks = [Task("d", "t", ("b", "c")), Task("b", "t", ("a",)), Task("c", "t", ("a",)), Task("a", "t")]
    assert [t.name for t in topological(tasks)] == ["a", "b", "c", "d"]
    with pytest.raises(LocalError, match="dependency cycle"):
        topological([Task("a", "t", ("b",)), Task("b", "t", ("a",))])
    with pytest.raises(LocalError, match="unknown task"):
        topological([Task("a", "t", ("zzz",))])


def test_rayjob_helpers() -> None:
    assert local_entrypoint("ferry step tune --run x").startswith(f"{PY} -m ferry.cli.app step tune")
    assert local_entrypoint("python -c 1") == "python -c 1"
    assert local_command(["ferry", "step", "data"]) == [PY, "-m", "ferry.cli.app", "step", "data"]
    assert submission_id("wf", "train", 0) == "wf-train" and submission_id("wf", "train", 2) == "wf-train-r2"


def test_ferry_env_carries_token_settings(settings: Settings) -> None:
    env = ferry_env(settings)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"].endswith(".ferry/ray/auth_token")
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert env["FERRY_HOME"] == str(settings.home.resolve())
    assert env["FERRY_RAY_DASHBOARD_PORT"] == "8265"


def test_rendered_pipeline_loads(tmp_path: Path) -> None:
    """The real rendered local Workflow is in the subset the runner accepts."""
    from ferry.render.bundle import render_files
    from ferry.spec import load_specs

    root = Path(__file__).resolve().parents[2]
    specs, errors = load_specs([root / "gitops" / "models"])
    assert not errors
    for path, text in render_files([s.model for s in specs], "local").items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    loaded = load_workflow(tmp_path / "fraud-detector")
    assert [t.name for t in loaded.tasks] == ["data", "tune", "train", "evaluate", "register", "rollout"]
    assert loaded.mutexes == ["ferry-model-fraud-detector"]
    assert loaded.parameters["spec-hash"] in loaded.name
    assert next(t for t in loaded.tasks if t.name == "register").when


# --- the runner for real (subprocesses) -----------------------------------------------------------------

def test_dag_parameters_outputs_and_when(tmp_path: Path, settings: Settings) -> None:
    marker = tmp_path / "d-ran"
    templates = [
        step("make", WRITE + "out('x', sys.argv[1])", outputs=("x",),
             args=["{{workflow.name}}:{{workflow.parameters.greeting}}"]),
        step("use", WRITE + "out('passed', 'false'); out('seen', sys.argv[1] + '|' + os.environ['FOO'] + '|'"
                            " + os.environ['HOME'] + '|' + os.environ['RAY_AUTH_MODE'])",
             outputs=("passed", "seen"), args=["{{tasks.a.outputs.parameters.x}}"],
             env=[{"name": "FOO", "value": "bar"}, {"name": "HOME", "value": "/pod-only"}]),
        step("mark", count(marker)),
    ]
    tasks = [{"name": "a", "template": "make"},
             {"name": "b", "template": "use", "dependencies": ["a"]},
             {"name": "c", "template": "mark", "dependencies": ["b"],
              "when": "{{tasks.b.outputs.parameters.passed}} == true"},
             {"name": "d", "template": "mark", "dependencies": ["c"]}]
    folder = write_workflow(tmp_path / "wf", tasks, templates, params={"spec-hash": "abc", "greeting": "hello"},
                            overrides={"greeting": "hi"})
    seen: list[str] = []
    result = run_workflow(folder, settings, on_update=lambda wf: seen.append(wf["status"]["phase"]))

    status = result["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "4/4" and status["finishedAt"]
    assert outputs(task_node(result, "a")) == {"x": "demo-0123456789:hi"}  # Workflow argument overrides
    assert outputs(task_node(result, "b"))["seen"].split("|")[:2] == ["demo-0123456789:hi", "bar"]
    assert outputs(task_node(result, "b"))["seen"].split("|")[2] != "/pod-only"  # HOME is pod-only
    assert outputs(task_node(result, "b"))["seen"].endswith("|token")
    skipped = task_node(result, "c")
    assert (skipped["type"], skipped["phase"]) == ("Skipped", "Skipped")
    assert "false == true" in skipped["message"]
    assert task_node(result, "d")["phase"] == "Succeeded" and runs_of(marker) == 1  # dependents of Skipped run
    assert seen[0] == "Running" and seen[-1] == "Succeeded"
    on_disk = json.loads((settings.runs_dir / "demo-0123456789" / "workflow.json").read_text())
    assert on_disk == result
    root = status["nodes"]["demo-0123456789"]
    assert root["type"] == "DAG" and root["children"] == [task_node(result, "a")["id"]]
    for node in status["nodes"].values():
        assert {"id", "name", "displayName", "type", "templateName", "phase", "startedAt", "finishedAt",
                "message", "outputs", "children"} <= set(node)
    assert "demo-0123456789:hi" in node_log_path(settings, "demo-0123456789", "b").read_text()


def test_exit_75_is_retried(tmp_path: Path, settings: Settings) -> None:
    counter = tmp_path / "tries"
    code = count(counter) + f"import sys\nsys.exit(75 if len(open({str(counter)!r}).readlines()) == 1 else 0)\n"
    folder = write_workflow(tmp_path / "wf", [{"name": "a", "template": "flaky"}], [step("flaky", code, retry=True)])
    started = time.monotonic()
    result = run_workflow(folder, settings, backoff_scale=FAST)
    assert time.monotonic() - started < 10
    assert result["status"]["phase"] == "Succeeded" and runs_of(counter) == 2
    node = task_node(result, "a")
    attempts = [result["status"]["nodes"][c] for c in node["children"]]
    assert node["type"] == "Retry"
    assert [(a["displayName"], a["phase"], a["outputs"]["exitCode"]) for a in attempts] == [
        ("a(0)", "Failed", "75"), ("a(1)", "Succeeded", "0")]


def test_failure_is_final_and_stops_dependents(tmp_path: Path, settings: Settings) -> None:
    tries, after = tmp_path / "tries", tmp_path / "after"
    templates = [step("bad", count(tries) + "print('training diverged'); raise SystemExit(3)", retry=True),
                 step("after", count(after))]
    tasks = [{"name": "train", "template": "bad"},
             {"name": "register", "template": "after", "dependencies": ["train"]}]
    folder = write_workflow(tmp_path / "wf", tasks, templates)
    result = run_workflow(folder, settings, backoff_scale=FAST)
    status = result["status"]
    assert status["phase"] == "Failed"
    assert "train" in status["message"] and "exit code 3" in status["message"]
    assert "training diverged" in status["message"]
    assert runs_of(tries) == 1  # exit 3 does not match the retry expression
    assert task_node(result, "register")["phase"] == "Omitted" and runs_of(after) == 0
    table = render_progress(result)
    assert table.row_count == 2
    text = _render(table)
    assert "Failed" in text and "Omitted" in text


def test_unknown_variable_is_a_clear_error(tmp_path: Path, settings: Settings) -> None:
    folder = write_workflow(tmp_path / "wf", [{"name": "a", "template": "s"}],
                            [step("s", "pass", args=["{{workflow.parameters.nope}}"])])
    result = run_workflow(folder, settings)
    assert result["status"]["phase"] == "Error"
    assert "unknown variable {{workflow.parameters.nope}}" in result["status"]["message"]


def test_resume_after_kill_does_not_rerun_succeeded(tmp_path: Path, settings: Settings) -> None:
    first, second, gate = tmp_path / "first", tmp_path / "second", tmp_path / "gate"
    templates = [step("one", count(first) + WRITE + "out('v', 'from-one')", outputs=("v",)),
                 step("two", count(second) + f"import os,sys\nassert sys.argv[1] == 'from-one'\n"
                                             f"sys.exit(0 if os.path.exists({str(gate)!r}) else 1)",
                      args=["{{tasks.one.outputs.parameters.v}}"])]
    tasks = [{"name": "one", "template": "one"}, {"name": "two", "template": "two", "dependencies": ["one"]}]
    folder = write_workflow(tmp_path / "wf", tasks, templates)
    assert run_workflow(folder, settings)["status"]["phase"] == "Failed"
    assert (runs_of(first), runs_of(second)) == (1, 1)

    # Simulate a runner killed while `two` ran: the file says Running, nothing finished it.
    path = settings.runs_dir / "demo-0123456789" / "workflow.json"
    saved = json.loads(path.read_text())
    saved["status"].update(phase="Running", finishedAt=None, message="")
    node = task_node(saved, "two")
    node.update(phase="Running", finishedAt=None, message="")
    path.write_text(json.dumps(saved))
    gate.touch()

    result = run_workflow(folder, settings)
    assert result["status"]["phase"] == "Succeeded"
    assert (runs_of(first), runs_of(second)) == (1, 2)  # `one` reused with its output, `two` ran again
    assert run_workflow(folder, settings)["status"]["phase"] == "Succeeded"
    assert (runs_of(first), runs_of(second)) == (1, 2)  # a Succeeded workflow is not run again
    assert [r["name"] for r in list_runs(settings)] == ["demo-0123456789"]
    assert load_run(settings, "demo-0123456789")["status"]["phase"] == "Succeeded"


def test_mutex_waits_then_runs(tmp_path: Path, settings: Settings) -> None:
    folder = write_workflow(tmp_path / "wf", [{"name": "a", "template": "s"}], [step("s", "pass")])
    lock = locks.lock_path(settings, "ferry-model-demo")
    messages: list[str] = []
    with locks.exclusive(lock, what="test holder", timeout_s=0), \
            pytest.raises(LocalError, match="mutex ferry-model-demo is held by pid"):
        run_workflow(folder, settings, lock_timeout_s=0.3)

    holding, waiting = threading.Event(), threading.Event()

    def hold() -> None:  # until the run says it waits, however slow the machine (not a fixed sleep)
        with locks.exclusive(lock, what="test holder", timeout_s=0):
            holding.set()
            waiting.wait(30)

    def on_update(workflow: dict[str, Any]) -> None:
        messages.append(workflow["status"]["message"])
        if messages[-1].startswith("Waiting for mutex ferry-model-demo"):
            waiting.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    result = run_workflow(folder, settings, lock_timeout_s=30, on_update=on_update)
    holder.join(5)
    assert result["status"]["phase"] == "Succeeded"
    assert waiting.is_set(), messages


def test_a_stop_from_another_thread_interrupts_the_run_resumably(tmp_path: Path, settings: Settings) -> None:
    """`ferry up` runs each model's Workflow in a thread; Ctrl-C there stops every run through `stop`."""
    started, second = tmp_path / "started", tmp_path / "second"
    templates = [step("slow", count(started) + "import time\ntime.sleep(60)"), step("next", count(second))]
    tasks = [{"name": "slow", "template": "slow"}, {"name": "next", "template": "next", "dependencies": ["slow"]}]
    folder = write_workflow(tmp_path / "wf", tasks, templates)
    stop = threading.Event()
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(run_workflow(folder, settings, stop=stop)))
    began = time.monotonic()
    runner.start()
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    runner.join(40)
    assert not runner.is_alive() and time.monotonic() - began < 40  # the 60 s step was stopped, not waited for
    assert outcome["status"]["phase"] == "Running"
    assert "interrupted" in outcome["status"]["message"]
    assert runs_of(second) == 0  # nothing new started after the stop


def test_run_lookups_fail_clearly(settings: Settings) -> None:
    with pytest.raises(LocalError, match="no local run named 'nope'"):
        load_run(settings, "nope")
    with pytest.raises(LocalError, match="no local run"):
        node_log_path(settings, "nope", "data")


def test_bad_workflows_fail_before_running(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="not found"):
        load_workflow(tmp_path / "missing")
    folder = write_workflow(tmp_path / "wf", [{"name": "a", "template": "s", "depends": "x"}], [step("s", "pass")])
    with pytest.raises(LocalError, match="only `dependencies`"):
        load_workflow(folder)


def _render(table: Any) -> str:
    console = Console(record=True, width=160)
    console.print(table)
    return console.export_text()


def test_a_local_step_keeps_the_users_home_and_has_no_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The template's HOME=/tmp and FERRY_IMAGE are for a pod; a local step is a process in no container."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(names.IMAGE_ENV, raising=False)
    template_env = [{"name": "HOME", "value": "/tmp"}, {"name": names.IMAGE_ENV, "value": "ferry:0.1.0"},
                    {"name": "MLFLOW_TRACKING_URI", "value": "http://127.0.0.1:1"}]
    env = step_env(Settings(home=tmp_path), template_env, tmp_path / "outputs")
    assert names.IMAGE_ENV not in env and env["HOME"] == str(tmp_path / "home")
    assert env["FERRY_OUTPUTS_DIR"] == str(tmp_path / "outputs")
