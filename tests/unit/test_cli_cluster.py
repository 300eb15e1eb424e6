"""`ferry runs|runs show|logs|submit --argo-server`: the argo-workflows SDK against a loopback stand-in of the
Argo Server (tests/support/fake_argo_server.py). Every request the CLI sends is checked against the vendored
Argo Workflows schema, every response the stand-in serves too (so it cannot drift from Argo's shape), and the
output is compared with local mode's for the same runs."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.fake_argo_server import ArgoState, FakeArgoServer, serve
from tests.support.kube_schemas import argo_definitions, validate_argo_definition, validate_object
from typer.testing import CliRunner

from ferry.adapters import argo_server as argo
from ferry.cli import output
from ferry.cli.app import app
from ferry.contract import names
from ferry.local.engine.state import node_id, status_path
from ferry.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
PROD = ROOT / "gitops" / "rendered" / "prod"
MODEL = "fraud-detector"
runner = CliRunner()


def _doc(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


TEMPLATE = _doc(PROD / MODEL / "workflowtemplate.yaml")
RENDERED_RUN = _doc(PROD / MODEL / "workflow.yaml")
DEPLOYED_HASH = argo.template_spec_hash(TEMPLATE)


# ------------------------------------------------------------------------------------------ run fixtures


def _node(wf: str, node_name: str, display: str, kind: str, template: str, phase: str, t: tuple[str, str | None],
          boundary: str | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"id": wf if node_name == wf else node_id(wf, node_name), "name": node_name,
                            "displayName": display, "type": kind, "templateName": template, "phase": phase,
                            "startedAt": t[0], "finishedAt": t[1], "children": []}
    if boundary:
        node["boundaryID"] = boundary
    if phase == "Succeeded" and kind == "Pod":
        node["outputs"] = {"parameters": [{"name": "rows", "value": "1200"}], "exitCode": "0"}
    if phase == "Failed":
        node["message"] = "Error (exit code 75)"
    return node


def make_run(name: str, attempts: dict[str, list[str]], started: str, finished: str | None,
             phase: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Workflow in the shape the Argo Server returns: the rendered run, plus a status whose nodes follow
    Argo's naming (root id = workflow name, task `wf.task`, attempts `wf.task(i)`, ids by FNV-1a)."""
    workflow = copy.deepcopy(RENDERED_RUN)
    labels = labels or workflow["metadata"]["labels"]
    workflow["metadata"] = {"name": name, "namespace": "ferry", "uid": f"uid-{name}", "labels": labels,
                            "annotations": {"workflows.argoproj.io/pod-name-format": "v2"},
                            "creationTimestamp": started}
    templates = {t["name"]: t for t in TEMPLATE["spec"]["templates"]}
    stamp = (started, finished)
    root = _node(name, name, name, "DAG", "pipeline", phase, stamp)
    nodes = {name: root}
    previous: dict[str, Any] | None = None
    for task, phases in attempts.items():
        retry = "retryStrategy" in templates[task]
        last_phase = phases[-1]
        task_node = _node(name, f"{name}.{task}", task, "Retry" if retry else "Pod", task, last_phase,
                          (started, None if last_phase == "Running" else finished), boundary=name)
        nodes[task_node["id"]] = task_node
        (previous or root)["children"].append(task_node["id"])
        previous = task_node
        for index, attempt_phase in enumerate(phases if retry else []):
            attempt = _node(name, f"{name}.{task}({index})", f"{task}({index})", "Pod", task, attempt_phase,
                            (started, None if attempt_phase == "Running" else finished), boundary=name)
            nodes[attempt["id"]] = attempt
            task_node["children"].append(attempt["id"])
            previous = attempt
    done = sum(1 for n in nodes.values() if n.get("boundaryID") and "(" not in n["displayName"]
               and n["phase"] == "Succeeded")
    workflow["status"] = {"phase": phase, "startedAt": started, "finishedAt": finished,
                          "progress": f"{done}/{len(TEMPLATE['spec']['templates'][0]['dag']['tasks'])}",
                          "nodes": nodes, "storedWorkflowTemplateSpec": TEMPLATE["spec"]}
    if phase == "Failed":
        workflow["status"]["message"] = "child 'tune' failed"
    return workflow


RUNS = [
    make_run("fraud-detector-aaaaaaaaaa", {"data": ["Succeeded"], "tune": ["Failed", "Failed"]},
             "2026-11-20T08:00:00Z", "2026-11-20T08:20:00Z", "Failed"),
    make_run(f"fraud-detector-{DEPLOYED_HASH}", {"data": ["Succeeded"], "tune": ["Failed", "Succeeded"],
                                                 "train": ["Succeeded"]},
             "2026-11-25T09:00:00Z", "2026-11-25T10:00:00Z", "Succeeded"),
    make_run("fraud-detector-lite-bbbbbbbbbb", {"data": ["Succeeded"]}, "2026-11-24T07:00:00Z",
             "2026-11-24T07:01:00Z", "Succeeded",
             labels=names.labels("fraud-detector-lite", "pipeline-run", "bbbbbbbbbb")),
]
SHOWN = RUNS[1]["metadata"]["name"]


def _pods(workflow: dict[str, Any], step: str) -> list[str]:
    return argo.step_pods(workflow, step)


# ---------------------------------------------------------------------------------------- the stand-in


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "_width", 200)  # these tests read table rows, as on a wide terminal


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeArgoServer]:
    state = ArgoState(workflows={w["metadata"]["name"]: copy.deepcopy(w) for w in RUNS},
                      templates={TEMPLATE["metadata"]["name"]: copy.deepcopy(TEMPLATE)})
    shown = state.workflows[SHOWN]
    for index, pod in enumerate(_pods(shown, "tune")):
        state.logs[pod] = [f"tune attempt {index} line {i}" for i in range(3)]
    state.logs[_pods(shown, "data")[0]] = ["data: 1200 rows"]
    monkeypatch.setenv("FERRY_ARGO_TOKEN", state.token)
    monkeypatch.setenv("FERRY_ARGO_NAMESPACE", "ferry")
    yield from serve(state)


def _cli(server: FakeArgoServer, *args: str) -> Any:
    return runner.invoke(app, [*args, "--argo-server", server.url])


# --------------------------------------------------------------------------- the stand-in is Argo-shaped


@pytest.mark.parametrize("workflow", RUNS, ids=[w["metadata"]["name"] for w in RUNS])
def test_served_workflows_validate_strictly(workflow: dict[str, Any]) -> None:
    assert validate_object(workflow) == []


def test_schema_check_catches_a_wrong_request() -> None:
    body = argo.request_json(argo.create_request("ferry", MODEL, "abc", retrain=False, reason="r"))
    body["workflow"]["spec"]["workflowTemplateRef"]["nme"] = body["workflow"]["spec"]["workflowTemplateRef"].pop(
        "name")
    body["serverDryrun"] = True
    errors = validate_argo_definition(body, "WorkflowCreateRequest")
    assert any("nme" in e for e in errors) and any("serverDryrun" in e for e in errors), errors


# ------------------------------------------------------------------------------------------------ runs


def test_runs_lists_every_page_newest_first(cluster: FakeArgoServer) -> None:
    result = _cli(cluster, "runs")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "fraud-detector" in line]
    assert [r.split()[1] for r in rows] == [SHOWN, "fraud-detector-lite-bbbbbbbbbb", "fraud-detector-aaaaaaaaaa"]
    lists = [r for r in cluster.state.requests if r.path == "/api/v1/workflows/ferry"]
    assert len(lists) == 2, "3 runs at 2 per page: the CLI must follow metadata.continue"
    assert lists[1].query["listOptions.continue"] == ["2"]
    assert all(r.headers["Authorization"] == "Bearer test-token" for r in cluster.state.requests)


def test_runs_of_one_model_use_a_label_selector(cluster: FakeArgoServer) -> None:
    result = _cli(cluster, "runs", "--model", "fraud-detector-lite")
    assert result.exit_code == 0, result.output
    assert "fraud-detector-lite-bbbbbbbbbb" in result.output and SHOWN not in result.output
    [request] = cluster.state.requests
    selector = request.query["listOptions.labelSelector"][0]
    assert "ferry.dev/model=fraud-detector-lite" in selector.split(",")


def _run_labels(node: Any) -> Iterator[dict[str, str]]:
    """Labels of every pipeline run the rendered objects create: Workflows, and the Workflows a CronWorkflow
    or a Sensor's trigger creates."""
    if isinstance(node, dict):
        if node.get("kind") == "Workflow" and "metadata" in node:  # not an AppProject's {group, kind} entry
            yield node["metadata"]["labels"]
        if node.get("kind") == "CronWorkflow" and "spec" in node:
            yield node["spec"]["workflowMetadata"]["labels"]
        for value in node.values():
            yield from _run_labels(value)
    elif isinstance(node, list):
        for value in node:
            yield from _run_labels(value)


def test_list_selector_matches_what_ferry_renders() -> None:
    """Every run ferry creates on a cluster (spec, schedule, drift) carries the labels the selector asks for."""
    found = 0
    for path in sorted(PROD.glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for labels in _run_labels(doc):
                found += 1
                for pair in argo.run_selector(labels[names.LABEL_MODEL]).split(","):
                    key, _, value = pair.partition("=")
                    assert labels.get(key) == value, (path, pair)
    assert found >= 3  # at least both models' Workflows and a CronWorkflow


def _resolves(definitions: dict[str, Any], definition: str, dotted: str) -> bool:
    node: dict[str, Any] = definitions[definition]
    for part in dotted.split("."):
        while "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[-1]]
        if node.get("type") == "array":
            node = node["items"]
            while "$ref" in node:
                node = definitions[node["$ref"].rsplit("/", 1)[-1]]
        props = node.get("properties") or {}
        if part not in props:
            return False
        node = props[part]
    return True


def test_list_fields_are_fields_of_a_workflow_list() -> None:
    kwargs = argo.list_kwargs("fraud-detector")
    definitions = argo_definitions()
    for path in kwargs["fields"].split(","):
        assert _resolves(definitions, "io.argoproj.workflow.v1alpha1.WorkflowList", path), path
    assert not _resolves(definitions, "io.argoproj.workflow.v1alpha1.WorkflowList", "items.status.phse")


def test_list_pages_validate_as_workflow_lists(cluster: FakeArgoServer) -> None:
    with argo.ArgoServer(argo.ArgoTarget.from_env(cluster.url)) as server:
        page = server._json("listing", server.workflows.list_workflows, "ferry", **argo.list_kwargs())
    assert page["items"] and validate_argo_definition(page, "WorkflowList") == []


def _local_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    settings = load_settings()
    for workflow in RUNS:
        path = status_path(settings, workflow["metadata"]["name"])
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(workflow))
    return tmp_path


def test_runs_output_is_the_same_as_local_mode(cluster: FakeArgoServer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _local_home(tmp_path, monkeypatch)
    for args in (["runs"], ["runs", "show", SHOWN], ["runs", "--model", MODEL]):
        local = runner.invoke(app, args)
        remote = _cli(cluster, *args)
        assert local.exit_code == remote.exit_code == 0, local.output + remote.output
        assert remote.output == local.output, args


def test_runs_show_prints_the_dag_with_attempts(cluster: FakeArgoServer) -> None:
    result = _cli(cluster, "runs", "show", SHOWN)
    assert result.exit_code == 0, result.output
    tune = next(line for line in result.output.splitlines() if line.lstrip("│ ").startswith("tune"))
    assert "Succeeded" in tune and re.search(r"│\s+2\s+│", tune), tune
    [request] = cluster.state.requests
    assert request.method == "GET" and request.path == f"/api/v1/workflows/ferry/{SHOWN}"


def test_runs_show_unknown_run_says_so(cluster: FakeArgoServer) -> None:
    result = _cli(cluster, "runs", "show", "nope")
    assert result.exit_code == 1
    [line] = result.output.splitlines()  # the ArgoServerError's message, one line, no traceback
    assert line.startswith("error the Argo Server refused") and "HTTP 404" in line and "not found" in line


# ------------------------------------------------------------------------------------------------ logs


def test_logs_prints_every_attempt_of_a_step(cluster: FakeArgoServer) -> None:
    result = _cli(cluster, "logs", SHOWN, "tune")
    assert result.exit_code == 0, result.output
    pods = _pods(cluster.state.workflows[SHOWN], "tune")
    assert len(pods) == 2
    assert result.output.index("tune attempt 0 line 2") < result.output.index("tune attempt 1 line 0")
    assert f"--- attempt 1 ({pods[1]}) ---" in result.output
    log_requests = [r for r in cluster.state.requests if r.path.endswith("/log")]
    assert [r.query["podName"] for r in log_requests] == [[p] for p in pods]
    assert all(r.query["logOptions.container"] == ["main"] for r in log_requests)


def test_log_stream_entries_are_argo_log_entries(cluster: FakeArgoServer) -> None:
    pod = _pods(cluster.state.workflows[SHOWN], "data")[0]
    with argo.ArgoServer(argo.ArgoTarget.from_env(cluster.url)) as server:
        data = server._call("log", server.workflows.workflow_logs, "ferry", SHOWN, **argo.log_kwargs(pod))
    entries = [json.loads(line)["result"] for line in data.decode().splitlines()]
    assert entries and all(validate_argo_definition(e, "LogEntry") == [] for e in entries)
    assert list(argo.parse_log_stream(data)) == ["data: 1200 rows"]


def test_logs_of_an_unknown_step_name_the_steps(cluster: FakeArgoServer) -> None:
    result = _cli(cluster, "logs", SHOWN, "trian")
    assert result.exit_code == 1
    assert "no step 'trian'" in result.output and "train" in result.output


def test_pod_names_share_the_node_hash() -> None:
    """Argo's v2 pod name is <workflow>-<template>-<FNV-1a of the node name>, the hash in the node id."""
    workflow = RUNS[1]
    for node in workflow["status"]["nodes"].values():
        if node["type"] == "Pod":
            pod = argo.pod_name(workflow, node)
            assert pod == f"{SHOWN}-{node['templateName']}-{node['id'].rsplit('-', 1)[1]}"
    v1 = copy.deepcopy(workflow)
    v1["metadata"]["annotations"]["workflows.argoproj.io/pod-name-format"] = "v1"
    node = next(n for n in v1["status"]["nodes"].values() if n["type"] == "Pod")
    assert argo.pod_name(v1, node) == node["id"]


# ---------------------------------------------------------------------------------------------- submit


def _posts(server: FakeArgoServer) -> list[Any]:
    return [r.body for r in server.state.requests if r.method == "POST"]


def test_submit_creates_the_spec_run_from_the_template(cluster: FakeArgoServer) -> None:
    cluster.state.workflows.pop(SHOWN)
    result = _cli(cluster, "submit", MODEL, "--reason", "new data landed")
    assert result.exit_code == 0, result.output
    assert f"submitted {MODEL}-{DEPLOYED_HASH}" in result.output
    [body] = _posts(cluster)
    assert validate_argo_definition(body, "WorkflowCreateRequest") == []
    workflow = body["workflow"]
    assert validate_object(workflow) == []
    assert workflow["spec"] == {"workflowTemplateRef": {"name": f"{MODEL}-pipeline"},
                                "arguments": {"parameters": [{"name": "spec-hash", "value": DEPLOYED_HASH},
                                                             {"name": "trigger", "value": "spec"}]}}
    assert workflow["metadata"]["name"] == names.workflow_name(MODEL, DEPLOYED_HASH)
    assert workflow["metadata"]["annotations"]["ferry.dev/reason"] == "new data landed"
    labels = workflow["metadata"]["labels"]
    assert {k: v for k, v in labels.items() if k != names.LABEL_TRIGGER} == RENDERED_RUN["metadata"]["labels"]
    template_get = cluster.state.requests[0]
    assert template_get.path == f"/api/v1/workflow-templates/ferry/{MODEL}-pipeline"


def test_submit_of_an_existing_run_finds_it(cluster: FakeArgoServer) -> None:
    result = _cli(cluster, "submit", MODEL)
    assert result.exit_code == 0, result.output
    assert f"{SHOWN} exists already (Succeeded)" in result.output and "--retrain" in result.output


def test_submit_retrain_gets_a_fresh_name(cluster: FakeArgoServer) -> None:
    first = _cli(cluster, "submit", MODEL, "--retrain")
    second = _cli(cluster, "submit", MODEL, "--retrain")
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    bodies = _posts(cluster)
    assert len(bodies) == 2
    for body in bodies:
        assert validate_argo_definition(body, "WorkflowCreateRequest") == []
        meta = body["workflow"]["metadata"]
        assert "name" not in meta and meta["generateName"] == f"{MODEL}-manual-"
        assert meta["labels"][names.LABEL_TRIGGER] == "manual"
        assert {"name": "trigger", "value": "manual"} in body["workflow"]["spec"]["arguments"]["parameters"]
    created = re.findall(rf"submitted ({MODEL}-manual-\d+)", first.output + second.output)
    assert len(set(created)) == 2


def test_submit_of_a_model_not_on_the_cluster(cluster: FakeArgoServer) -> None:
    result = _cli(cluster, "submit", "no-such-model")
    assert result.exit_code == 1
    assert "no-such-model-pipeline" in result.output and "404" in result.output
    assert _posts(cluster) == []


# ---------------------------------------------------------------------------------------------- errors


def test_a_wrong_token_is_refused_with_a_hint(cluster: FakeArgoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_ARGO_TOKEN", "stale")
    result = _cli(cluster, "runs")
    assert result.exit_code == 1
    message = result.output
    assert "HTTP 401" in message and "FERRY_ARGO_TOKEN" in message and "stale" not in message


def test_another_namespace_is_refused(cluster: FakeArgoServer) -> None:
    result = runner.invoke(app, ["runs", "--argo-server", cluster.url, "-n", "team-b"])
    assert result.exit_code == 1
    assert "HTTP 403" in result.output and "'team-b'" in result.output


def test_an_unreachable_server_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    state = ArgoState()
    gen = serve(state)
    url = next(gen).url
    gen.close()  # the port is closed now: connection refused
    target = argo.ArgoTarget.from_env(url, timeout_s=2)
    with argo.ArgoServer(target) as server, pytest.raises(argo.ArgoServerError, match="cannot reach"):
        server.list_runs()


def test_the_token_comes_from_the_environment_only() -> None:
    target = argo.ArgoTarget.from_env("http://argo:2746/", environ={"ARGO_TOKEN": "Bearer v2:abc"})
    assert target.url == "http://argo:2746" and target.token == "Bearer v2:abc"
    assert "v2:abc" not in repr(target)
    assert argo.ArgoTarget.from_env("http://a", environ={}).token is None
    assert argo.ArgoTarget.from_env("http://a", environ={"FERRY_ARGO_NAMESPACE": "ml"}).namespace == "ml"


def test_without_a_server_the_verbs_stay_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _local_home(tmp_path, monkeypatch)
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0 and SHOWN in result.output


def test_logs_of_a_garbage_collected_step_explain_why_they_are_empty(cluster: FakeArgoServer) -> None:
    result = _cli(cluster, "logs", SHOWN, "train")  # a Pod node whose pod podGC deleted: no lines
    assert result.exit_code == 0, result.output
    assert "podGC" in result.output


def test_local_retrain_goes_through_the_local_retraining_runner(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --argo-server, `submit --retrain` starts the services and a local retraining run (the runner
    itself is exercised by the integration tests; here only the CLI's wiring)."""
    from ferry.local.alerts import retrain
    from ferry.local.supervisor import services

    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(services, "start_services", lambda settings: calls.append(("services", settings.home)))

    def start(settings: Any, model: str, reason: str, **kwargs: Any) -> retrain.RetrainResult:
        calls.append(("retrain", model, reason, kwargs["trigger"]))
        kwargs["on_started"](f"{model}-manual-20261126-101010")
        return retrain.RetrainResult(model, f"{model}-manual-20261126-101010", "Failed", "child 'train' failed")

    monkeypatch.setattr(retrain, "start_retraining", start)
    result = runner.invoke(app, ["submit", MODEL, "--retrain", "--reason", "by hand"])
    assert calls == [("services", tmp_path), ("retrain", MODEL, "by hand", "manual")]
    assert "started fraud-detector-manual-20261126-101010" in result.output
    assert "Failed child 'train' failed" in result.output and result.exit_code == 1


def test_documented_environment_is_what_the_adapter_reads() -> None:
    from ferry.cli.options import CLUSTER_ENVIRONMENT

    read = {argo.ENV_SERVER, argo.ENV_NAMESPACE, *argo.ENV_TOKENS, argo.ENV_INSECURE}
    assert set(CLUSTER_ENVIRONMENT) == read
