"""The GPU check's pure parts: rates from timestamps, trial overlap, the verdict, and docs/benchmarks/gpu.md.

Kept apart from check.py (which imports torch and ray) so unit tests can check them anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

TARGET_RATIO = 0.9
# The one call to the `run` tool (the device machine); docs and the check's own messages quote these.
RUN_COMMAND = "bash benchmarks/gpu/run.sh"
RUN_CARRY = (".gpu-carry",)
RUN_TIMEOUT_S = 360
PREPARE_COMMAND = ".venv/bin/python benchmarks/gpu/prepare.py"


@dataclasses.dataclass(frozen=True)
class Profile:
    n_train: int
    n_valid: int
    epochs: int
    batch_size: int
    hidden: int
    trials: int
    gpus_per_trial: float
    cpus_per_worker: int
    cpus_per_trial: int
    num_cpus: int
    object_store_bytes: int
    n_features: int = 15


# FULL: an epoch of 4M rows takes about a second on an H200 (3 M samples/s seen through Ray Train), long enough
# that a per-epoch cost of tens of ms (validation, checkpoint, report) is measured, not lost in noise.
FULL = Profile(n_train=4_000_000, n_valid=20_000, epochs=6, batch_size=4096, hidden=64, trials=4,
               gpus_per_trial=0.25, cpus_per_worker=4, cpus_per_trial=2, num_cpus=16, object_store_bytes=4 * 2**30)
# TINY: the same paths in about a minute; on CPU the GPU fractions are dropped (gpu_spec).
TINY = Profile(n_train=20_000, n_valid=2_000, epochs=3, batch_size=1024, hidden=32, trials=2,
               gpus_per_trial=0.5, cpus_per_worker=1, cpus_per_trial=1, num_cpus=2, object_store_bytes=200 * 2**20)


def steady_rate(epoch_ends: Sequence[float], samples_per_epoch: int) -> float:
    """Samples/s between the end of the first epoch and the end of the last: the first epoch pays for
    CUDA's warm-up and allocator growth, which neither path repeats."""
    if len(epoch_ends) < 2:
        raise ValueError(f"need at least 2 epoch end times to measure a rate, got {len(epoch_ends)}; "
                         "run at least 2 epochs")
    span = epoch_ends[-1] - epoch_ends[0]
    if span <= 0:
        raise ValueError(f"epoch end times must increase, got {list(epoch_ends)}")
    return samples_per_epoch * (len(epoch_ends) - 1) / span


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t opens)."""
    spans = list(intervals)
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
                    key=lambda event: (event[0], event[1]))
    open_now = best = 0
    for _, step in events:
        open_now += step
        best = max(best, open_now)
    return best


def tune_summary(rows: Sequence[Mapping[str, Any]], samples_per_epoch: int, gpu_fraction: float) -> dict[str, Any]:
    """Per trial: its device and steady rate; together: how many ran at once, and the samples/s of them all
    from the first trial's start to the last one's end (setup included, as a user waits for it)."""
    by_trial: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_trial.setdefault(str(row["trial"]), []).append(row)
    trials = []
    for trial, reports in sorted(by_trial.items()):
        reports = sorted(reports, key=lambda row: row["wall_time"])
        trials.append({"trial": trial, "device": reports[0]["device"], "device_name": reports[0]["device_name"],
                       "cuda_visible_devices": reports[0]["cuda_visible_devices"], "gpu_fraction": gpu_fraction,
                       "epochs": len(reports), "start": reports[0]["start"], "end": reports[-1]["wall_time"],
                       "samples_per_s": steady_rate([row["wall_time"] for row in reports], samples_per_epoch)})
    if not trials:
        raise ValueError("no Tune trial reported a timed epoch; see the trial errors in the Ray output above")
    span = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    return {"trials": trials, "max_concurrent": max_overlap((t["start"], t["end"]) for t in trials),
            "aggregate_samples_per_s": sum(t["epochs"] for t in trials) * samples_per_epoch / span}


def checks(result: Mapping[str, Any]) -> dict[str, bool]:
    """What must hold for the check to pass. On a GPU: ferry's Train path at least TARGET_RATIO of plain
    torch, every worker and trial on CUDA, and the fractional-GPU trials running at the same time."""
    gpu = result["mode"] == "gpu"
    trials = result["tune"]["trials"]
    want = "cuda" if gpu else "cpu"
    found = {
        "train_on_requested_device": all(d.startswith(want) for d in result["train"]["devices"]),
        "tune_trials_on_requested_device": bool(trials) and all(t["device"].startswith(want) for t in trials),
        "tune_all_trials_finished": len(trials) == result["tune"]["requested_trials"],
    }
    if gpu:
        found["train_ratio_at_least_target"] = result["ratio"] >= TARGET_RATIO
        found["tune_trials_shared_the_gpu"] = result["tune"]["max_concurrent"] >= 2
    return found


def how_to_run() -> str:
    carry = ", ".join(f'"{path}"' for path in RUN_CARRY)
    return "\n".join([
        "## How to run it",
        "",
        "On a machine with an NVIDIA GPU, one call. In this workplace that is the `run` tool (its H200 has torch",
        "but no ray, pydantic or mlflow, and no network), after preparing the carry here:",
        "",
        f"1. `{PREPARE_COMMAND}` downloads this venv's versions of what the device image lacks as cp312",
        "   wheels, leaves out Ray's Java jar and dashboard UI, and writes `.gpu-carry/site.tar.xz`; it prints",
        "   the working tree plus the carry against the tool's 64 MiB and stops if they exceed it.",
        f"2. `run` with `command: {RUN_COMMAND}`, `carry: [{carry}]`, `timeout_s: {RUN_TIMEOUT_S}`.",
        "   The limit leaves room to rerun it within the session's device time; `gpu-check.json` records each",
        "   stage's seconds.",
        "3. Copy the returned `gpu.md` over `docs/benchmarks/gpu.md` and commit it; `gpu-check.json` has every figure,",
        "   `check.log` holds the full output.",
        "",
        "Elsewhere: `python benchmarks/gpu/check.py --out DIR --doc docs/benchmarks/gpu.md` with torch,",
        "ray[train,tune] and ferry importable. `--device cpu --tiny` runs the same code paths on CPU with small data",
        "(tests/integration/test_gpu_check.py); `--no-gpu` writes this page as not yet run.",
    ])


def _method(profile: Mapping[str, Any]) -> str:
    return "\n".join([
        "## What it measures",
        "",
        f"Synthetic data ({profile['n_train']:,} training rows of {profile['n_features']} features, "
        f"{profile['n_valid']:,} validation rows), the fraud_detection workload's FraudMLP "
        f"(hidden {profile['hidden']}), Adam, batch {profile['batch_size']}, {profile['epochs']} epochs, "
        "data on the device. A rate is samples/s from the end of the first epoch to the end of the last.",
        "",
        "- **plain torch**: the workload's own setup and `train_epoch` in one process, no Ray; run before and",
        "  after the Ray runs, and the faster of the two is the baseline.",
        f"- **ferry Train**: `ferry.steps.train._trainer` on a spec with `resources: {{workers: 1, cpus_per_worker: "
        f"{profile['cpus_per_worker']}, gpus_per_worker: 1}}` (TorchTrainer, use_gpu=True) running the workload's",
        "  unmodified `train_loop_per_worker`, which also scores the validation set and checkpoints every epoch;",
        "  each `ray.train.report` is timestamped in the worker.",
        f"- **ferry Tune**: `ferry.steps.tune._tuner` with `tune: {{num_samples: {profile['trials']}, max_concurrent: "
        f"{profile['trials']}, gpus_per_trial: {profile['gpus_per_trial']}, cpus_per_trial: "
        f"{profile['cpus_per_trial']}, scheduler: fifo, search: random}}` running the workload's `tune_trainable`.",
    ])


def _results(result: Mapping[str, Any]) -> str:
    train, tune, plain = result["train"], result["tune"], result["plain"]
    rows = [
        "| path | samples/s | device |",
        "| --- | ---: | --- |",
        f"| plain torch (before / after Ray) | {plain['before']:,.0f} / {plain['after']:,.0f} | {plain['device']} |",
        f"| ferry Train (1 worker, 1 GPU) | {train['samples_per_s']:,.0f} | {', '.join(train['devices'])} |",
        f"| ferry Tune, all {len(tune['trials'])} trials together | {tune['aggregate_samples_per_s']:,.0f} | "
        f"{', '.join(sorted({t['device'] for t in tune['trials']}))} |",
    ]
    rows += [f"| ferry Tune trial {t['trial']} ({t['gpu_fraction']} GPU) | {t['samples_per_s']:,.0f} | "
             f"{t['device']} |" for t in tune["trials"]]
    verdict = "passed" if result["passed"] else "FAILED"
    failed = [name for name, ok in result["checks"].items() if not ok]
    return "\n".join([
        "## Results",
        "",
        f"Run {result['when']} on {result['device_name']} (torch {result['torch']}, ray {result['ray']}, "
        f"Python {result['python']}).",
        "",
        *rows,
        "",
        f"ferry Train / plain torch: **{result['ratio']:.3f}** (target at least {TARGET_RATIO}). "
        f"Tune trials running at once: at most {tune['max_concurrent']} of {tune['requested_trials']}.",
        "",
        f"Verdict: **{verdict}**" + (f" (failed: {', '.join(failed)})" if failed else "") + ".",
        "",
        "Seconds per stage: " + ", ".join(f"{name} {s}" for name, s in result.get("stage_seconds", {}).items()) + ".",
    ])


def render_doc(result: Mapping[str, Any] | None, profile: Mapping[str, Any], reason: str = "") -> str:
    """docs/benchmarks/gpu.md: the measured figures when `result` is given, else why there are none yet."""
    head = ["# GPU check: ferry's Train and Tune paths on a GPU against plain torch", "",
            "Written by `benchmarks/gpu/check.py`; do not edit by hand.", ""]
    body = _results(result) if result is not None else "\n".join([
        "## Results", "", f"Not yet run on a GPU: {reason or 'no GPU was available where this page was written'}.",
        "The figures appear here once the check has run as described below."])
    return "\n".join([*head, body, "", _method(profile), "", how_to_run(), ""])
