"""What a person reads: every verb's output at 80 columns with no terminal (a pipe, a CI log) and at 200.

Names (models, runs, versions, hashes) are never cut to "fra…", no line is wider than the terminal, and each
table starts on a line of its own. The data is what ferry prints in practice: long run names, failure
messages, a rollout with several checks, a runbook URL.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from ferry.cli import output
from ferry.cli import rollout as rollout_cli
from ferry.cli.app import app
from ferry.cli.tables import following_runs
from ferry.contract import names
from ferry.local import reconcile
from ferry.local.alerts.store import AlertStore, Incoming
from ferry.local.engine.state import status_path
from ferry.local.supervisor import services
from ferry.local.supervisor.service_defs import SKIP_HINT
from ferry.settings import Settings

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
URL = re.compile(r"^https?://\S+$")
MODEL, LITE = "fraud-detector", "fraud-detector-lite"
SPEC_HASH, LITE_HASH = "4cb811bae2", "83f5ed1627"  # pragma: allowlist secret
RUN_ID = "5f0c2a9e81d34b6c9a7e2d1f0b3c4a5d"  # pragma: allowlist secret
DRIFT_RUN = f"{names.retrain_workflow_prefix(LITE, 'drift')}20261125t091500z"
RUN_NAMES = (names.workflow_name(MODEL, SPEC_HASH), names.workflow_name(LITE, LITE_HASH), DRIFT_RUN)


@pytest.fixture(params=[80, 200])
def width(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> int:
    """The terminal width; CliRunner's stdout is no terminal, as in a pipe or a CI log."""
    monkeypatch.setattr(output.console, "_width", request.param)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    return int(request.param)


def readable(text: str, width: int, identifiers: Iterable[str]) -> None:
    lines = text.splitlines()
    too_wide = [line for line in lines if cell_len(line) > width and not URL.match(line)]
    assert not too_wide, "\n".join(too_wide)
    assert "…" not in text, text
    for identifier in identifiers:  # whole, on one line
        assert any(identifier in line for line in lines), f"{identifier!r} is not whole in\n{text}"
    after_something = [line for line in lines if re.search(r"\S.*[┏┌]", line)]  # a table starts its own line
    assert not after_something, "\n".join(after_something)


def _node(run: str, task: str, phase: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"{run}-{task}", "name": f"{run}.{task}", "displayName": task, "type": "Pod", "phase": phase,
            "boundaryID": run, "startedAt": "2026-11-25T09:00:00Z", "finishedAt": "2026-11-25T09:04:10Z", **extra}


def workflow(run: str, model: str, digest: str, phase: str, failed_step: str | None = None) -> dict[str, Any]:
    steps = ["data", "tune", "train", "evaluate", "register", "rollout"]
    nodes = {run: {"id": run, "name": run, "displayName": run, "type": "DAG", "phase": phase}}
    for step in steps:
        if step == failed_step:
            nodes[f"{run}-{step}"] = _node(run, step, "Failed", message=(
                "exit code 1: error evaluation did not pass (average_precision 0.41 < 0.5): the model is not "
                "registered; change the spec or the data and push again"))
            break
        nodes[f"{run}-{step}"] = _node(run, step, "Succeeded", outputs={"parameters": [
            {"name": "model-version", "value": "7"}, {"name": "run-id", "value": RUN_ID}]})
    done = sum(1 for n in nodes.values() if n.get("boundaryID") and n["phase"] == "Succeeded")
    status: dict[str, Any] = {"phase": phase, "startedAt": "2026-11-25T09:00:00Z", "finishedAt": "2026-11-25T09:30:00Z",
                              "progress": f"{done}/{len(steps)}", "nodes": nodes}
    if failed_step:
        status["message"] = f"child '{run}-{failed_step}' failed"
    return {"metadata": {"name": run, "labels": names.labels(model, "pipeline-run", digest)}, "status": status}


RUNS = [workflow(RUN_NAMES[0], MODEL, SPEC_HASH, "Succeeded"),
        workflow(RUN_NAMES[1], LITE, LITE_HASH, "Failed", failed_step="evaluate"),
        workflow(RUN_NAMES[2], LITE, LITE_HASH, "Running")]


def _local_runs() -> None:
    settings = Settings()
    for run in RUNS:
        path = status_path(settings, run["metadata"]["name"])
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(run))


def test_runs(width: int) -> None:
    _local_runs()
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0, result.output
    readable(result.output, width, [*RUN_NAMES, MODEL, LITE, "2026-11-25T09:00:00Z", "6/6"])


def test_runs_show(width: int) -> None:
    _local_runs()
    result = runner.invoke(app, ["runs", "show", RUN_NAMES[1]])
    assert result.exit_code == 0, result.output
    readable(result.output, width, [RUN_NAMES[1], "evaluate", "Failed"])


SERVICES = [
    services.ServiceStatus("ray", "running", "http://127.0.0.1:8265", 4242, message="already running"),
    services.ServiceStatus("mlflow", "started", "http://127.0.0.1:5000", 4243),
    services.ServiceStatus("prometheus", "skipped", message=SKIP_HINT),
    services.ServiceStatus("alertmanager", "skipped", message=SKIP_HINT),
    services.ServiceStatus("receiver", "started", "http://127.0.0.1:9095", 4245),
]


def test_status(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "service_status", lambda settings: SERVICES)
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    readable(result.output, width, ["alertmanager", "http://127.0.0.1:8265", "skipped"])
    assert "prometheus-alertmanager" in result.output.replace("\n", " ")


def _up(settings: Any, models: Any, on_update: Any = None, on_services: Any = None, deploy: Any = None,
        on_wait: Any = None, start_serving: Any = None) -> Any:
    on_services(SERVICES)
    for run in RUNS[:2]:
        on_update(run)
    outcomes = [
        reconcile.ModelOutcome(MODEL, SPEC_HASH, "ran", RUN_NAMES[0], "Succeeded", seconds=1812.4,
                               outputs={"register.model-version": "7", "rollout.decision": "promoted"}),
        reconcile.ModelOutcome(LITE, LITE_HASH, "ran", RUN_NAMES[1], "Failed", seconds=95,
                               message=RUNS[1]["status"]["nodes"][f"{RUN_NAMES[1]}-evaluate"]["message"]),
    ]
    served = [reconcile.Served(MODEL, "http://127.0.0.1:8000/fraud-detector",
                               {"transaction_id": "tx-000042", "fraud_probability": 0.0132, "model_version": "7"})]
    return reconcile.UpResult(SERVICES, outcomes, served)


def test_up_prints_one_table_per_block(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "up", _up)
    monkeypatch.setattr(services, "use_ray_client_env", lambda settings: None)
    result = runner.invoke(app, ["up"])
    assert result.exit_code == 1, result.output  # one model failed
    readable(result.output, width, [*RUN_NAMES[:2], MODEL, LITE, SPEC_HASH, LITE_HASH, "version 7, promoted",
                                    "http://127.0.0.1:8000/fraud-detector/predict", "http://127.0.0.1:5000"])
    # services, each run's last state, then the outcomes: in that order, each on lines of its own
    text = result.output
    assert text.index("alertmanager") < text.index(RUN_NAMES[0]) < text.index("average_precision") \
        < text.index("version 7, promoted") < text.index("example prediction")


CHECKS = [
    ("001", {"at": 1764061200, "verdict": "inconclusive", "action": "hold", "weight": 10,
             "requests": [412.0, 38.0], "errors": [1.0, 0.0], "p99_ms": [21.4, 23.9], "score_psi": None,
             "reason": "too little data: 38 challenger requests < min_requests 200; holding at 10%"}),
    ("002", {"at": 1764061230, "verdict": "pass", "action": "step", "weight": 25, "requests": [1802.0, 211.0],
             "errors": [3.0, 0.0], "error_rate_delta": -0.0017, "error_rate_lower": -0.0061,
             "error_rate_upper": 0.0123, "p99_ms": [22.0, 24.6], "score_psi": 0.031, "psi_noise": 0.012,
             "reason": "all checks passed; stepping to 25%"}),
    ("003", {"at": 1764061260, "verdict": "fail", "action": "rollback", "weight": 0, "requests": [2400.0, 600.0],
             "errors": [6.0, 36.0], "error_rate_delta": 0.0575, "error_rate_lower": 0.0391,
             "error_rate_upper": 0.0759, "p99_ms": [22.3, 131.8], "score_psi": 0.274, "psi_noise": 0.015,
             "reason": "error rate +0.0575 exceeds max_error_rate_delta 0.01; p99 latency 131.8 ms exceeds 100 ms"}),
]


def test_rollout_status(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.rollout import actions

    found = SimpleNamespace(view=SimpleNamespace(champion="6", challenger=None, weight=0), version="7",
                            state="rolled-back", weight="0", reason="2 failed checks: error rate [+0.0391, +0.0759]",
                            checks=CHECKS)
    monkeypatch.setattr(rollout_cli, "_registry", lambda: None)
    monkeypatch.setattr(actions, "status", lambda registry, model, version: found)
    result = runner.invoke(app, ["rollout", "status", MODEL])
    assert result.exit_code == 0, result.output
    readable(result.output, width, ["fraud-detector: champion v6, challenger v- at 0%", "rolled-back",
                                    "inconclusive", "rollback", "2400/600", "22.3/131.8", "0.274 (0.015)",
                                    "+0.0575 [+0.0391, +0.0759]", "[+0.0391, +0.0759]"])


def _record_alerts() -> None:
    store = AlertStore.open(Settings())
    burn = Incoming("fp-burn-0001", "firing", {
        "alertname": "FerryModelErrorBudgetBurn", "severity": "page", "team": "risk-ml", "model": MODEL},
        {"summary": f"{MODEL} is burning its error budget 14.4x faster than allowed over 1h and 5m",
         "runbook_url": names.runbook_url("FerryModelErrorBudgetBurn")},
        "2026-11-25T09:15:00Z", None, "http://127.0.0.1:9090/graph")
    drift = Incoming("fp-drift-0001", "resolved", {
        "alertname": "FerryModelDriftHigh", "severity": "ticket", "team": "risk-ml", "model": LITE},
        {"summary": f"{LITE}: PSI of feature tx_amount_rolling_mean_7d is 0.31 (alert at 0.25)",
         "runbook_url": names.runbook_url("FerryModelDriftHigh")},
        "2026-11-25T08:00:00Z", "2026-11-25T10:00:00Z", "http://127.0.0.1:9090/graph")
    store.record([burn, drift], receiver="ferry")
    ids = store.add_trigger(LITE, [drift], "started", DRIFT_RUN, "retraining on drift")
    store.update_triggers(ids, phase="Running")


def test_alerts(width: int) -> None:
    _record_alerts()
    result = runner.invoke(app, ["alerts"])
    assert result.exit_code == 0, result.output
    readable(result.output, width, ["FerryModelErrorBudgetBurn", "FerryModelDriftHigh", "severity=page",
                                    "model=fraud-detector-lite", DRIFT_RUN,
                                    names.runbook_url("FerryModelErrorBudgetBurn")])
    as_json = runner.invoke(app, ["alerts", "--json"])
    assert [a["alertname"] for a in json.loads(as_json.output)] == ["FerryModelErrorBudgetBurn", "FerryModelDriftHigh"]


def test_plan(width: int, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "gitops/models", tmp_path / "gitops/models")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=t", *args], check=True)
    spec = tmp_path / "gitops/models/fraud-detector.yaml"
    spec.write_text(spec.read_text().replace("epochs: 6", "epochs: 8").replace("route: /fraud-detector",
                                                                                "route: /fraud-detector-v2"))
    result = runner.invoke(app, ["plan", "--base", "main"])
    assert result.exit_code == 0, result.output
    readable(result.output, width, ["fraud-detector: retrain", "spec.training.epochs: 6 → 8", "4cb811bae2",
                                    "fraud-detector-lite: unchanged", "recommender: unchanged"])
    as_json = runner.invoke(app, ["plan", "--base", "main", "--format", "json"])
    assert {m["name"] for m in json.loads(as_json.output)["models"]} == {MODEL, LITE, "recommender"}  # never wrapped


def test_a_table_gives_way_to_blocks_only_when_it_does_not_fit() -> None:
    table = output.FitTable("run", "phase", output.Col("message", wrap=True))
    table.add_row(RUN_NAMES[2], "Running", "a message of several words that may wrap")
    assert table.widths(200) == [len(RUN_NAMES[2]), len("Running"), 40]
    assert table.widths(len(RUN_NAMES[2]) + 7 + output.MIN_TEXT + 10) == [len(RUN_NAMES[2]), 7, output.MIN_TEXT]
    assert table.widths(len(RUN_NAMES[2]) + 7 + output.MIN_TEXT + 9) is None
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        table.add_row("a", "b")


@pytest.mark.parametrize("terminal", [True, False])
def test_what_follows_a_run_starts_on_a_line_of_its_own(terminal: bool) -> None:
    """rich's Live display, outside a terminal, ends its last frame without a line end (so `ferry up` once
    printed two tables on one line): there each run's last state is printed once, when the runs are done."""
    out = StringIO()
    console = Console(file=out, width=80, force_terminal=terminal, color_system=None)
    with following_runs(console) as on_update:
        for run in (RUNS[0], RUNS[1], RUNS[1]):
            on_update(run)
    console.print("after")
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())  # a terminal's cursor controls
    assert text.endswith("\nafter\n")
    if not terminal:
        assert [RUN_NAMES[0] in line or RUN_NAMES[1] in line for line in text.splitlines()].count(True) == 3
        readable(text, 80, RUN_NAMES[:2])


def test_no_runs_says_how_to_start_one(width: int) -> None:
    result = runner.invoke(app, ["runs", "--model", MODEL])
    assert result.exit_code == 0
    readable(result.output, width, [MODEL])
    assert " ".join(result.output.split()) == f"no pipeline runs of {MODEL} here yet: `ferry up` or `ferry submit " \
        "MODEL` starts one"
