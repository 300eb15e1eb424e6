"""Where a test run's time goes, when TESTS_TIMELINE names a folder (off otherwise): each test process appends its
tests' phases (setup, call, teardown: start, stop, outcome) to `<folder>/<worker>-<pid>.jsonl`, and each pytest-xdist
controller samples the machine's CPU (/proc/stat, every CPU_EVERY_S) to `<folder>/cpu-<pid>.jsonl` and the CPU each
process used by the module whose test started it (tests/support/process_cpu.py) to `<folder>/procs-<pid>.json`.
`benchmarks/ci_timeline.py` reads the folder: which worker ran which module when, whether the CPU sat idle, and
where the CPU went.
tests/conftest.py takes the report hook and calls `start`, so `TESTS_TIMELINE=/tmp/tl ./task test` is all it takes."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import process_cpu

ENV = "TESTS_TIMELINE"
CPU_EVERY_S = 5.0
PROCESSES_EVERY_S = 1.0  # a sweep reads three small files per process: 2 ms of CPU for 60 processes here


def _folder() -> Path | None:
    found = os.environ.get(ENV)
    return Path(found) if found else None


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")


# Set in an xdist controller, which receives its workers' reports too: only the process that ran a test writes it.
_in_controller = False


def _is_xdist_controller(config: pytest.Config) -> bool:
    return getattr(config, "workerinput", None) is None and bool(getattr(config.option, "numprocesses", None))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    folder = _folder()
    if folder is None or _in_controller:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    _append(folder / f"{worker}-{os.getpid()}.jsonl", {"id": report.nodeid, "when": report.when, "start": report.start,
                                                       "stop": report.stop, "outcome": report.outcome})


def _cpu_ticks() -> tuple[int, int]:
    """Busy and total jiffies of every CPU since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def _sample_cpu(path: Path, stop: threading.Event) -> None:
    busy, total, since = *_cpu_ticks(), time.monotonic()
    while not stop.wait(CPU_EVERY_S):
        now_busy, now_total = _cpu_ticks()
        share = (now_busy - busy) / max(1, now_total - total)
        _append(path, {"t": time.time(), "seconds": round(time.monotonic() - since, 2), "busy": round(share, 3)})
        busy, total, since = now_busy, now_total, time.monotonic()


def start(config: pytest.Config) -> None:
    """Make the folder; in an xdist controller (where no test runs), also sample the CPU until the session ends."""
    global _in_controller
    folder = _folder()
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)  # a run without xdist has no controller to make it
    if not _is_xdist_controller(config):
        return
    _in_controller = True
    stop = threading.Event()
    samplers = [threading.Thread(target=_sample_cpu, args=(folder / f"cpu-{os.getpid()}.jsonl", stop),
                                 name="timeline-cpu", daemon=True),
                threading.Thread(target=process_cpu.sample, name="timeline-processes", daemon=True,
                                 args=(folder / f"procs-{os.getpid()}.json", stop, PROCESSES_EVERY_S))]
    for sampler in samplers:
        sampler.start()

    def finish() -> None:
        stop.set()
        for sampler in samplers:
            sampler.join(30)

    config.add_cleanup(finish)
