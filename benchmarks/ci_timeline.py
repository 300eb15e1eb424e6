"""Where a test run's time went, from what `TESTS_TIMELINE=<folder> ./task test` wrote (tests/support/timeline.py).

Prints, with seconds from the first test's start: each xdist worker's modules in the order it ran them (start,
end, and their setup/call/teardown seconds), when each suite (integration, reliability, unit, golden) ended, the
machine's CPU use per minute with the idle CPU-seconds, and the CPU-seconds of the processes each module's tests
started (Ray heads and workers, steps, services) and of each kind of process (tests/support/process_cpu.py).
Not a benchmark of ferry: it is what the next change to CI's schedule (tests/run_all.sh, tests/conftest.py
module_order) or to what its tests run should be measured with.

    TESTS_TIMELINE=/tmp/tl ./task test && .venv/bin/python benchmarks/ci_timeline.py /tmp/tl
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModuleSpan:
    worker: str
    module: str
    start: float
    end: float
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    tests: int = 0


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def module_spans(folder: Path) -> list[ModuleSpan]:
    """One span per (worker process, module), in the order each worker ran them."""
    spans: dict[tuple[str, str], ModuleSpan] = {}
    for path in sorted(folder.glob("*.jsonl")):
        if path.name.startswith("cpu-"):
            continue
        worker = path.stem
        for record in _records(path):
            module = record["id"].split("::")[0]
            span = spans.setdefault((worker, module), ModuleSpan(worker, module, record["start"], record["stop"]))
            span.start, span.end = min(span.start, record["start"]), max(span.end, record["stop"])
            span.seconds[record["when"]] += record["stop"] - record["start"]
            span.tests += record["when"] == "call"
    return sorted(spans.values(), key=lambda s: (s.worker, s.start))


def cpu_samples(folder: Path) -> list[dict[str, float]]:
    """The longest CPU record of the run's xdist controllers (each samples the whole machine)."""
    found = [_records(path) for path in folder.glob("cpu-*.jsonl")]
    return max(found, key=len, default=[])


def suite_of(module: str) -> str:
    parts = module.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0]


def report(folder: Path, cores: int) -> list[str]:
    spans = module_spans(folder)
    if not spans:
        return [f"no test records in {folder}: was TESTS_TIMELINE set for the run?"]
    t0 = min(s.start for s in spans)
    lines = ["worker · start · end · module (setup/call/teardown s, tests)"]
    for span in spans:
        phases = "/".join(f"{span.seconds[w]:.0f}" for w in ("setup", "call", "teardown"))
        lines.append(f"{span.worker:>14} {span.start - t0:7.0f} {span.end - t0:7.0f}  {span.end - span.start:6.0f} s  "
                     f"{span.tests:3d} tests  {phases:>12}  {span.module}")
    ends: dict[str, float] = defaultdict(float)
    for span in spans:
        suite = suite_of(span.module)
        ends[suite] = max(ends[suite], span.end - t0)
    lines.append("suites ended: " + ", ".join(f"{suite} {end:.0f} s" for suite, end in sorted(ends.items())))
    samples = cpu_samples(folder)
    lines += cpu_lines(samples, t0, cores)
    lines += process_lines(process_totals(folder), sum(s["busy"] * s["seconds"] for s in samples) * cores)
    return lines


def cpu_lines(samples: list[dict[str, float]], t0: float, cores: int) -> list[str]:
    if not samples:
        return ["no CPU samples"]
    minutes: dict[int, list[float]] = defaultdict(list)
    for sample in samples:
        minutes[int((sample["t"] - t0) // 60)].append(sample["busy"])
    busy = " ".join(f"{m}:{100 * sum(v) / len(v):.0f}%" for m, v in sorted(minutes.items()))
    idle = sum((1 - s["busy"]) * s["seconds"] for s in samples) * cores
    return [f"CPU busy by minute: {busy}", f"idle CPU-seconds: {idle:.0f} ({cores} cores)"]


def process_totals(folder: Path) -> list[tuple[str, str, float]]:
    """(module, kind of process, CPU-s) from the run's process sampler; the longest record if there are several."""
    found = [json.loads(path.read_text()) for path in folder.glob("procs-*.json")]
    best = max(found, key=lambda record: record["sweeps"], default={"totals": []})
    return [(module, kind, float(used)) for module, kind, used in best["totals"]]


def process_lines(totals: list[tuple[str, str, float]], busy_cpu_s: float, top: int = 20) -> list[str]:
    if not totals:
        return ["no process CPU record"]
    by_module: dict[str, float] = defaultdict(float)
    by_kind: dict[str, float] = defaultdict(float)
    kinds_of: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for module, kind, used in totals:
        by_module[module] += used
        by_kind[kind] += used
        kinds_of[module][kind] += used
    counted = sum(by_module.values())
    lines = [f"CPU-s in processes, by the module whose test started them ({counted:.0f} CPU-s counted of "
             f"{busy_cpu_s:.0f} busy; '-' = started outside any test: lint, the unit run's own process; setup "
             "runs before sampling):"]
    for module, used in sorted(by_module.items(), key=lambda item: -item[1])[:top]:
        biggest = sorted(kinds_of[module].items(), key=lambda item: -item[1])[:3]
        lines.append(f"  {used:7.1f}  {module}  ({', '.join(f'{kind} {cpu:.0f}' for kind, cpu in biggest)})")
    lines.append("CPU-s by kind of process:")
    lines += [f"  {used:7.1f}  {kind}" for kind, used in sorted(by_kind.items(), key=lambda item: -item[1])[:top]]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print("\n".join(report(args.folder, args.cores)))


if __name__ == "__main__":
    main()
