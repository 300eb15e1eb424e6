"""CPU-seconds per test module and per kind of process, for TESTS_TIMELINE (tests/support/timeline.py).

On 2 cores the whole suite is CPU-bound (benchmarks/ci_timeline.py shows the machine busy every minute), so CI's
time is the CPU its processes use, and a change to CI is worth what CPU it saves. Most of that CPU is not in the test
processes but in what they start: Ray heads and their workers and actors, step processes, MLflow, Prometheus.

Every `every_s` the xdist controller reads /proc: each process's user+system time, its command line (what kind of
process it is) and, once, the PYTEST_CURRENT_TEST it was started with (which module's test started it, or the
fixture setup of that test; a process started by a process started in a test inherits it). Processes already
running when sampling starts count only what they use after. What a process uses between the last sample and its
end is missed, and one that lives less than `every_s` is missed entirely: the totals are a floor. An xdist worker's
own CPU counts for the module its title says it runs (`[pytest-xdist running] <test>`); the unit run's, started
before any test, counts under "-" with setup and lint.
"""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

NO_TEST = "-"
TICKS_PER_S = os.sysconf("SC_CLK_TCK")  # /proc is Linux's, and so is this sampler
XDIST_TITLE = "[pytest-xdist"
# Python processes whose kind is their script's name.
SCRIPTS = ("dashboard.py", "log_monitor.py", "monitor.py", "default_worker.py", "mlflow", "ray", "pytest")


def process_kind(argv: list[str]) -> str:
    """What a process is, from its command line: a Ray actor or task by class (`ray::TrainController`), a Python
    module (`-m ferry.cli.app step`), a known script, else its executable's name."""
    if not argv:
        return "?"
    if argv[0].startswith("ray::"):  # ray::TrainController.run, ray::SERVE_REPLICA::<app>#...:ServeReplica:...
        name = argv[0].split()[0].split(".")[0]
        return "ray::ServeReplica" if "ServeReplica" in name else name
    if argv[0].startswith(XDIST_TITLE):
        return "pytest-xdist worker"
    if argv[0].startswith("ray-dashboard-"):
        return "ray-dashboard-" + argv[0].split("-")[2]
    if len(argv) == 1 and " " in argv[0]:  # a title set as one string (a Ray job's driver): its words are the argv
        argv = argv[0].split()
    exe = os.path.basename(argv[0])
    if not exe.startswith("python"):
        return exe
    args = [a for a in argv[1:] if a not in ("-u", "-B", "-O")]
    if args[:1] == ["-m"] and len(args) > 1:
        step = [args[2], args[3]] if args[1] == "ferry.cli.app" and args[2:3] == ["step"] and len(args) > 3 else []
        return " ".join(["-m", args[1], *step])
    if args[:1] == ["-c"]:
        return "python -c"
    script = os.path.basename(args[0]) if args else ""
    return script if script in SCRIPTS else exe


def running_module(argv: list[str]) -> str | None:
    """The module an xdist worker runs now, from the title it gives itself (`[pytest-xdist running] <nodeid>`)."""
    title = " ".join(argv)
    if not title.startswith(XDIST_TITLE) or "::" not in title:
        return None
    return title.split("] ", 1)[-1].split("::")[0].strip() or None


def test_module(environ: bytes) -> str:
    """The module (tests/.../test_x.py) whose test was running when the process started, from its environment."""
    for entry in environ.split(b"\0"):
        if entry.startswith(b"PYTEST_CURRENT_TEST="):
            return entry.split(b"=", 1)[1].decode(errors="replace").split("::")[0] or NO_TEST
    return NO_TEST


@dataclass
class _Process:
    module: str
    kind: str
    cpu: float  # CPU-s used when last seen
    renamable: bool  # a Python process: Ray and xdist retitle theirs (a worker is ray::IDLE, then an actor's)


def _read(path: str) -> bytes:
    with open(path, "rb") as found:
        return found.read()


def _argv(pid: str) -> list[str]:
    return _read(f"/proc/{pid}/cmdline").decode(errors="replace").split("\0")[:-1]


class ProcessCpu:
    """The processes seen so far; what each used between two sweeps counts for its module and kind then."""

    def __init__(self) -> None:
        self.processes: dict[tuple[str, str], _Process] = {}
        self.used: dict[tuple[str, str], float] = defaultdict(float)
        self.sweeps = 0

    def sweep(self) -> None:
        first, self.sweeps = self.sweeps == 0, self.sweeps + 1
        for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
            try:
                stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
                fields = stat[stat.rfind(")") + 2:].split()
                self._see(pid, (pid, fields[19]), (int(fields[11]) + int(fields[12])) / TICKS_PER_S, first)
            except (OSError, IndexError, ValueError):  # gone meanwhile, or not ours to read
                continue

    def _see(self, pid: str, key: tuple[str, str], cpu: float, first: bool) -> None:
        seen = self.processes.get(key)
        if seen is None:
            argv = _argv(pid)
            if not argv:  # a kernel thread
                return
            renamable = os.path.basename(argv[0]).startswith("python") or argv[0].startswith(("ray::", XDIST_TITLE))
            seen = self.processes[key] = _Process(running_module(argv) or test_module(_read(f"/proc/{pid}/environ")),
                                                  process_kind(argv), cpu if first else 0.0, renamable)
        elif seen.renamable and (argv := _argv(pid)):  # empty while it exits: keep what it was
            seen.kind, seen.module = process_kind(argv), running_module(argv) or seen.module
        self.used[(seen.module, seen.kind)] += cpu - seen.cpu
        seen.cpu = cpu

    def totals(self) -> list[list[object]]:
        """[module, kind, CPU-s] for every pair that used any, largest first."""
        return [[module, kind, round(used, 2)] for (module, kind), used in
                sorted(self.used.items(), key=lambda item: -item[1]) if used > 0]


def sample(path: Path, stop: threading.Event, every_s: float) -> None:
    """Sweep until `stop`, then write the totals to `path` (JSON)."""
    found = ProcessCpu()
    found.sweep()
    while not stop.wait(every_s):
        found.sweep()
    found.sweep()
    path.write_text(json.dumps({"every_s": every_s, "sweeps": found.sweeps, "totals": found.totals()}))
