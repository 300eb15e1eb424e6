"""The test-run timeline (tests/support/timeline.py) and its report (benchmarks/ci_timeline.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from benchmarks.ci_timeline import module_spans, report
from tests.support import timeline


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


def test_a_folder_without_records_says_so(tmp_path: Path) -> None:
    assert "no test records" in report(tmp_path, cores=2)[0]
