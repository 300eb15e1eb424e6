"""The test-run timeline (tests/support/timeline.py) and its report (benchmarks/ci_timeline.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from benchmarks.ci_timeline import module_spans, report
from tests.support import process_cpu, timeline


def _phase(nodeid: str, when: str, start: float, stop: float) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, when=when, start=start, stop=stop, outcome="passed")


def test_a_test_process_writes_its_phases_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(timeline.ENV, raising=False)
    timeline.pytest_runtest_logreport(_phase("tests/unit/test_a.py::test_x", "call", 1.0, 2.0))  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())

    monkeypatch.setenv(timeline.ENV, str(tmp_path))
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    timeline.pytest_runtest_logreport(_phase("tests/unit/test_a.py::test_x", "call", 1.0, 2.0))  # type: ignore[arg-type]
    [written] = tmp_path.iterdir()
    assert written.name.startswith("gw3-")
    assert json.loads(written.read_text()) == {"id": "tests/unit/test_a.py::test_x", "when": "call", "start": 1.0,
                                               "stop": 2.0, "outcome": "passed"}


def test_a_run_without_xdist_makes_the_folder_and_samples_no_cpu(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "timeline"
    monkeypatch.setenv(timeline.ENV, str(folder))
    timeline.start(SimpleNamespace(option=SimpleNamespace(numprocesses=None)))  # type: ignore[arg-type]
    assert folder.is_dir() and not list(folder.iterdir())


def _write(path: Path, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_report_shows_each_workers_modules_in_order_the_suites_ends_and_the_idle_cpu(tmp_path: Path) -> None:
    loop, quick, unit = ("tests/integration/test_loop.py", "tests/reliability/test_quick.py",
                         "tests/unit/test_u.py")
    _write(tmp_path / "gw0-10.jsonl", [
        {"id": f"{loop}::t", "when": "setup", "start": 100.0, "stop": 130.0, "outcome": "passed"},
        {"id": f"{loop}::t", "when": "call", "start": 130.0, "stop": 500.0, "outcome": "passed"},
        {"id": f"{quick}::a", "when": "call", "start": 501.0, "stop": 502.0, "outcome": "passed"},
    ])
    _write(tmp_path / "gw0-20.jsonl", [{"id": f"{unit}::u", "when": "call", "start": 100.0, "stop": 160.0,
                                        "outcome": "passed"}])
    _write(tmp_path / "cpu-1.jsonl", [{"t": 105.0, "seconds": 5.0, "busy": 1.0},
                                      {"t": 170.0, "seconds": 5.0, "busy": 0.5}])

    spans = module_spans(tmp_path)
    assert [(s.worker, s.module, s.tests) for s in spans] == [("gw0-10", loop, 1), ("gw0-10", quick, 1),
                                                               ("gw0-20", unit, 1)]
    assert spans[0].seconds["setup"] == 30 and spans[0].seconds["call"] == 370
    lines = report(tmp_path, cores=2)
    assert "suites ended: integration 400 s, reliability 402 s, unit 60 s" in lines
    assert "CPU busy by minute: 0:100% 1:50%" in lines
    assert "idle CPU-seconds: 5 (2 cores)" in lines  # half of 2 cores for 5 s
    assert lines[-1] == "no process CPU record"

    (tmp_path / "procs-1.json").write_text(json.dumps({"every_s": 1.0, "sweeps": 70, "totals": [
        [loop, "raylet", 40.0], [loop, "ray::TrainController", 20.0], [loop, "mlflow", 5.0],
        [loop, "redis-server", 1.0], [unit, "promtool", 8.0], ["-", "python -c", 6.0]]}))
    lines = report(tmp_path, cores=2)
    start = lines.index(next(line for line in lines if line.startswith("CPU-s in processes")))
    assert "(80 CPU-s counted of 15 busy;" in lines[start]  # busy: 5 s of 2 cores, then 5 s of one
    assert lines[start + 1:start + 4] == [f"     66.0  {loop}  (raylet 40, ray::TrainController 20, mlflow 5)",
                                          f"      8.0  {unit}  (promtool 8)", "      6.0  -  (python -c 6)"]
    assert lines[start + 4] == "CPU-s by kind of process:" and lines[start + 5] == "     40.0  raylet"


def test_a_folder_without_records_says_so(tmp_path: Path) -> None:
    assert "no test records" in report(tmp_path, cores=2)[0]


@pytest.mark.parametrize(("argv", "kind"), [
    (["ray::TrainController.run"], "ray::TrainController"),
    (["ray::ServeReplica:fraud-detector:router            "], "ray::ServeReplica"),
    (["ray::SERVE_REPLICA::fraud-canary#router#8g12:ServeReplica:fraud-canary:router"], "ray::ServeReplica"),
    (["[pytest-xdist running] tests/integration/test_canary.py::test_x"], "pytest-xdist worker"),
    (["ray-dashboard-NodeHead-0 (/v/bin/python -B -c from multiprocessing.forkserver import main)"],
     "ray-dashboard-NodeHead"),
    (["/v/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet", "--raylet_socket_name=/tmp/r"], "raylet"),
    (["/v/bin/python", "-m", "ferry.cli.app", "step", "tune", "--spec", "s.json"], "-m ferry.cli.app step tune"),
    (["/v/bin/python", "-m", "ferry.cli.app", "up", "tiny"], "-m ferry.cli.app"),
    (["/v/bin/python -m ferry.cli.app step train --spec gitops/rendered/local/loop/spec.json --run loop-1"],
     "-m ferry.cli.app step train"),
    (["/v/bin/python", "-u", "/v/lib/python3.11/site-packages/ray/_private/log_monitor.py", "--x"], "log_monitor.py"),
    (["/v/bin/python3.11", "/v/bin/mlflow", "server"], "mlflow"),
    (["/v/bin/python", "-c", "import sys;exec(eval(sys.stdin.readline()))"], "python -c"),
    (["/v/bin/python", "/tmp/own_script.py"], "python"),
    ([], "?"),
])
def test_a_process_kind_comes_from_its_command_line(argv: list[str], kind: str) -> None:
    assert process_cpu.process_kind(argv) == kind


def test_a_process_belongs_to_the_module_whose_test_started_it() -> None:
    assert process_cpu.running_module(["[pytest-xdist running] tests/integration/test_canary.py::test_x"]) == \
        "tests/integration/test_canary.py"
    assert process_cpu.running_module(["[pytest-xdist idle]"]) is None
    environ = b"HOME=/root\0PYTEST_CURRENT_TEST=tests/integration/test_canary.py::test_x (setup)\0PATH=/bin\0"
    assert process_cpu.test_module(environ) == "tests/integration/test_canary.py"
    assert process_cpu.test_module(b"HOME=/root\0") == process_cpu.NO_TEST


def test_the_sampler_counts_what_a_child_uses_after_it_started_under_its_module() -> None:
    found = process_cpu.ProcessCpu()
    found.sweep()  # what runs already is the baseline
    burn = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('done', " \
           "flush=True)\nsys.stdin.read()"
    env = {**os.environ, "PYTEST_CURRENT_TEST": "tests/unit/test_burn.py::test_b (call)"}
    child = subprocess.Popen([sys.executable, "-c", burn], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        found.sweep()
    finally:
        child.communicate("", timeout=30)
    [(_, kind, used)] = [row for row in found.totals() if row[0] == "tests/unit/test_burn.py"]
    assert kind == "python -c" and 0.25 <= float(used) < 5, used  # type: ignore[arg-type]
