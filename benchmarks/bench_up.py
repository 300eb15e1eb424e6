"""Benchmark: the README's main command (`ferry up` on the committed specs) from a fresh state to the
registered models, and the share of wall time spent outside the steps' own work (runner overhead).

Runs in a throwaway copy of gitops/models with its own free loopback ports. "Step work" is what each
step reports itself (the time inside its step function, after imports); everything else - service
start, process start-up, imports, Ray job submission and polling - counts as overhead.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ferry.local.supervisor import procs
from ferry.local.supervisor.services import stop_services
from ferry.settings import Settings
from ferry.steps.runner import TIMING_PREFIX

ROOT = Path(__file__).resolve().parents[1]
PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port",
         "prometheus_port", "alertmanager_port", "serve_port", "receiver_port", "redis_port")


def step_work(home: Path) -> dict[str, float]:
    work: dict[str, float] = {}
    for log in sorted((home / ".ferry/runs").glob("*/logs/*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(TIMING_PREFIX):
                record = json.loads(line.removeprefix(TIMING_PREFIX))
                work[f"{log.parts[-3]}/{record['step']}"] = record["work_s"]
    return work


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="ferry-bench-up-"))
    shutil.copytree(ROOT / "gitops/models", home / "gitops/models")
    settings = Settings(home=home, **{field: procs.free_port() for field in PORTS})
    env = {**os.environ, "FERRY_HOME": str(home), **{f"FERRY_{f.upper()}": str(getattr(settings, f)) for f in PORTS}}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ferry.cli.app", "up"], env=env, cwd=home, check=False,
                          capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    try:
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-4000:])
            raise SystemExit(f"ferry up failed with {done.returncode}")
        work = step_work(home)
    finally:
        stop_services(settings)
    total_work = sum(work.values())
    specs = ", ".join(sorted(path.stem for path in (home / "gitops/models").glob("*.yaml")))
    lines = [f"# `ferry up` from a fresh state (every committed spec: {specs})", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.", "",
             "| measure | seconds |", "|---|---:|", f"| wall time of `ferry up` | {wall:.1f} |",
             f"| steps' own work (sum) | {total_work:.1f} |",
             f"| outside the steps' work | {wall - total_work:.1f} ({(wall - total_work) / wall:.0%}) |", "",
             "| step | work s |", "|---|---:|"] + [f"| {k} | {v:.1f} |" for k, v in work.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "docs/benchmarks/up.md").write_text(text)
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
