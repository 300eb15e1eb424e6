"""GPU check (issue #13): ferry's Train step and fractional-GPU Tune trials on a GPU, against plain torch.

In one process and one run, on the same synthetic data and the fraud_detection workload's model:

1. plain torch: the workload's `_setup` + `train_epoch` on the device, no Ray (before and after the Ray runs);
2. ferry Train: the TorchTrainer that `ferry.steps.train._trainer` builds for a GPU spec (1 worker, 1 GPU),
   running the workload's `train_loop_per_worker` unchanged;
3. ferry Tune: the Tuner that `ferry.steps.tune._tuner` builds with fractional `gpus_per_trial`, running the
   workload's `tune_trainable` unchanged; each trial records the device it trained on and when it ran.

The Ray paths are timed in the worker: a wrapper stamps every `report` with the wall time and the CUDA device
and appends it to a file, so per-epoch validation, checkpointing and reporting count against ferry's rate.
Exit status 0 when every check in report.checks holds, 1 when one fails, 2 when no CUDA device is found.

    python benchmarks/gpu/check.py --out DIR [--doc docs/benchmarks/gpu.md]   # on a GPU (run.sh does this)
    python benchmarks/gpu/check.py --device cpu --tiny --out DIR              # the same paths on CPU, ~1 min
    python benchmarks/gpu/check.py --no-gpu --doc docs/benchmarks/gpu.md      # the page, saying not yet run
"""

from __future__ import annotations

import os

# Before anything imports ray: a private cluster on loopback that never joins another one or phones home.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# A small /dev/shm (a VM or container) then slows the object store instead of stopping Ray.
os.environ.setdefault("RAY_OBJECT_STORE_ALLOW_SLOW_STORAGE", "1")
for _var in ("RAY_ADDRESS", "FERRY_RAY_STORAGE"):
    os.environ.pop(_var, None)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
for _src in (ROOT / "platform" / "src", ROOT / "workloads" / "src", ROOT):
    sys.path.insert(0, str(_src))
# Ray workers get the same import path as the driver.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "platform" / "src"), str(ROOT / "workloads" / "src"), os.environ.get("PYTHONPATH", "")]
).rstrip(os.pathsep)

from benchmarks.gpu.report import FULL, TINY, Profile, checks, render_doc, steady_rate, tune_summary  # noqa: E402

NO_GPU = "no CUDA device: this check needs a GPU (torch.cuda.is_available() is False)"


def synthetic_data(p: Profile) -> dict[str, Any]:
    """Rows whose fraud label follows a noisy linear score (about 3% positive), so AP/AUC are defined."""
    import numpy as np

    rng = np.random.default_rng(0)
    weights = rng.normal(size=p.n_features).astype(np.float32)

    def rows(n: int) -> tuple[Any, Any]:
        x = rng.normal(size=(n, p.n_features)).astype(np.float32)
        score = x @ weights + rng.normal(scale=2.0, size=n).astype(np.float32)
        return x, (score > np.quantile(score, 0.97)).astype(np.float32)

    (x_train, y_train), (x_valid, y_valid) = rows(p.n_train), rows(p.n_valid)
    return {"x_train": x_train, "y_train": y_train, "x_valid": x_valid, "y_valid": y_valid}


def gpu_spec(p: Profile, use_gpu: bool) -> Any:
    """The fraud-detector-lite spec with GPU resources and a fractional-GPU Tune block, validated by ferry."""
    import yaml

    from ferry.spec.models import ModelSpec

    doc = yaml.safe_load((ROOT / "gitops" / "models" / "fraud-detector-lite.yaml").read_text())
    doc["metadata"]["name"] = "fraud-detector-gpu-check"
    doc["spec"]["training"] = {
        "resources": {"workers": 1, "cpus_per_worker": p.cpus_per_worker, "gpus_per_worker": 1 if use_gpu else 0},
        "epochs": p.epochs, "batch_size": p.batch_size, "params": {"hidden": p.hidden, "lr": 0.003},
        "max_failures": 0,
        "tune": {"num_samples": p.trials, "max_concurrent": p.trials, "scheduler": "fifo", "search": "random",
                 "cpus_per_trial": p.cpus_per_trial, "gpus_per_trial": p.gpus_per_trial if use_gpu else 0.0,
                 "space": {"lr": {"loguniform": [1e-4, 1e-2]}}},
    }
    return ModelSpec.model_validate(doc)


def plain_torch(data: dict[str, Any], spec: Any, device: str) -> float:
    """Samples/s of the workload's own setup and epoch loop, in this process, without Ray."""
    import torch

    from fraud_detection.model import train_epoch
    from fraud_detection.params import TrainingParams
    from fraud_detection.training import _setup

    training = spec.spec.training
    params = TrainingParams.from_values(dict(training.params))
    model, optimizer = _setup({"x_train": data["x_train"], "params": params}, torch.device(device))
    x = torch.as_tensor(data["x_train"], device=device)
    y = torch.as_tensor(data["y_train"], device=device)
    generator = torch.Generator().manual_seed(0)
    ends = []
    for _ in range(training.epochs):
        train_epoch(model, optimizer, x, y, training.batch_size, generator)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        ends.append(time.time())
    del model, optimizer, x, y
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return steady_rate(ends, len(data["x_train"]))


def _stamp(timing_dir: str, kind: str, start: float, report: Any) -> Any:
    """Wrap a Ray `report` so each call also appends when and where it ran to this process's timing file."""
    import torch

    def stamped(metrics: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        from ray import tune

        cuda = torch.cuda.is_available()
        trial = tune.get_context().get_trial_id() if kind == "tune" else "train"
        line = {"kind": kind, "trial": trial, "pid": os.getpid(), "start": start, "wall_time": time.time(),
                "epoch": metrics.get("epoch"), "device": f"cuda:{torch.cuda.current_device()}" if cuda else "cpu",
                "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
        with open(Path(timing_dir) / f"{kind}-{os.getpid()}.jsonl", "a") as out:
            out.write(json.dumps(line) + "\n")
        return report(metrics, *args, **kwargs)

    return stamped


def timed_train_loop(config: dict[str, Any]) -> None:
    """The workload's train loop with every `ray.train.report` timestamped (looked up at call time)."""
    import ray.train

    from fraud_detection.training import train_loop_per_worker

    config = dict(config)
    original = ray.train.report
    ray.train.report = _stamp(config.pop("timing_dir"), "train", time.time(), original)
    try:
        train_loop_per_worker(config)
    finally:
        ray.train.report = original


def timed_trainable(config: dict[str, Any], data: dict[str, Any], fixed_params: dict[str, Any]) -> None:
    """The workload's Tune trainable with every `tune.report` timestamped."""
    from ray import tune

    from fraud_detection.training import tune_trainable

    data = dict(data)
    original = tune.report
    tune.report = _stamp(data.pop("timing_dir"), "tune", time.time(), original)
    try:
        tune_trainable(config, data, fixed_params)
    finally:
        tune.report = original


def _timings(timing_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(timing_dir.glob(f"{kind}-*.jsonl"))
            for line in path.read_text().splitlines()]


def ferry_train(ctx: Any, data: dict[str, Any], timing_dir: Path) -> dict[str, Any]:
    from ferry.steps.train import _trainer

    training = ctx.spec.spec.training
    config = {**data, "params": dict(training.params), "epochs": training.epochs,
              "batch_size": training.batch_size, "seed": 0, "timing_dir": str(timing_dir)}
    result = _trainer(ctx, config).fit()
    if result.error is not None:
        raise RuntimeError(f"ferry's Train path failed: {result.error}")
    rows = sorted(_timings(timing_dir, "train"), key=lambda row: row["wall_time"])
    if len(rows) != training.epochs:
        raise RuntimeError(f"expected {training.epochs} timed reports from the Train worker, got {len(rows)}")
    return {"samples_per_s": steady_rate([row["wall_time"] for row in rows], len(data["x_train"])),
            "devices": sorted({row["device"] for row in rows}),
            "device_names": sorted({row["device_name"] for row in rows}),
            "epochs": len(rows), "last_metrics": {k: v for k, v in (result.metrics or {}).items()
                                                  if isinstance(v, (int, float, str))}}


def ferry_tune(ctx: Any, data: dict[str, Any], timing_dir: Path) -> dict[str, Any]:
    from ferry.steps.tune import _tuner

    training = ctx.spec.spec.training
    tune_spec = training.tune
    payload = {**data, "epochs": training.epochs, "batch_size": training.batch_size, "seed": 0,
               "timing_dir": str(timing_dir)}
    results = _tuner(ctx, tune_spec, payload).fit()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} Tune trial(s) failed; first: {results.errors[0]}")
    summary = tune_summary(_timings(timing_dir, "tune"), len(data["x_train"]), tune_spec.gpus_per_trial)
    return {**summary, "requested_trials": tune_spec.num_samples}


def object_store_bytes(p: Profile) -> int:
    """The profile's object store, but at most a quarter of the memory the machine reports now: Ray refuses
    a store larger than that, and the device machine's memory starts small and grows as it is used."""
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(100 * 2**20, min(p.object_store_bytes, physical // 4))


def _stage(found: dict[str, Any], name: str, work: Any) -> Any:
    """Run one stage, keeping its result and duration in `found`, so a later failure loses nothing measured."""
    started = time.time()
    found[name] = work()
    found.setdefault("stage_seconds", {})[name] = round(time.time() - started, 1)
    return found[name]


def run_ray_paths(p: Profile, spec: Any, data: dict[str, Any], use_gpu: bool, scratch: Path,
                  found: dict[str, Any]) -> None:
    import ray

    ray.init(address="local", num_cpus=p.num_cpus, num_gpus=1 if use_gpu else 0, include_dashboard=False,
             object_store_memory=object_store_bytes(p), logging_level="WARNING", log_to_driver=True,
             _temp_dir=str(scratch / "ray"))
    try:
        workload = SimpleNamespace(train_loop_per_worker=timed_train_loop, tune_trainable=timed_trainable)
        ctx = SimpleNamespace(spec=spec, workload=workload, workflow="gpu-check",
                              settings=SimpleNamespace(state_dir=scratch / "state"))
        (scratch / "train").mkdir()
        (scratch / "tune").mkdir()
        _stage(found, "train", lambda: ferry_train(ctx, data, scratch / "train"))
        _stage(found, "tune", lambda: ferry_tune(ctx, data, scratch / "tune"))
    finally:
        ray.shutdown()


def measure(p: Profile, device: str, found: dict[str, Any]) -> dict[str, Any]:
    """Fills `found` stage by stage (the caller writes it even if a stage fails) and returns it complete."""
    import ray
    import torch

    use_gpu = device == "cuda"
    found.update({
        "mode": "gpu" if use_gpu else "cpu", "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device_name": torch.cuda.get_device_name() if use_gpu else platform.processor() or "cpu",
        "torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version(),
        "profile": dataclasses.asdict(p), "object_store_bytes": object_store_bytes(p),
    })
    spec = gpu_spec(p, use_gpu)
    data = _stage(found, "data", lambda: synthetic_data(p))
    found["data"] = {"rows": len(data["x_train"])}
    with tempfile.TemporaryDirectory(prefix="ferry-gpu-") as tmp:
        before = _stage(found, "plain_before", lambda: plain_torch(data, spec, device))
        run_ray_paths(p, spec, data, use_gpu, Path(tmp), found)
        after = _stage(found, "plain_after", lambda: plain_torch(data, spec, device))
    baseline = max(before, after)
    found["plain"] = {"before": before, "after": after, "samples_per_s": baseline, "device": device}
    found["ratio"] = found["train"]["samples_per_s"] / baseline
    found["checks"] = checks(found)
    found["passed"] = all(found["checks"].values())
    return found


def summary_lines(result: dict[str, Any]) -> list[str]:
    plain, train, tune = result["plain"], result["train"], result["tune"]
    return [
        f"device: {result['device_name']} ({result['mode']}), torch {result['torch']}, ray {result['ray']}",
        f"plain torch      {plain['samples_per_s']:>14,.0f} samples/s (before {plain['before']:,.0f}, "
        f"after {plain['after']:,.0f})",
        f"ferry Train      {train['samples_per_s']:>14,.0f} samples/s on {', '.join(train['devices'])}",
        f"ferry Tune       {tune['aggregate_samples_per_s']:>14,.0f} samples/s, {len(tune['trials'])} trials, "
        f"at most {tune['max_concurrent']} at once, on {', '.join(sorted({t['device'] for t in tune['trials']}))}",
        f"ratio ferry Train / plain torch: {result['ratio']:.3f}",
        *(f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in result["checks"].items()),
        f"GPU check {'passed' if result['passed'] else 'FAILED'}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small data and 2 trials: a quick run of the paths")
    parser.add_argument("--no-gpu", action="store_true", help="only write --doc, saying the check has not run")
    parser.add_argument("--out", type=Path, help="folder for gpu-check.json")
    parser.add_argument("--doc", type=Path, help="where to write the docs page (GPU runs and --no-gpu only)")
    args = parser.parse_args()
    profile = TINY if args.tiny else FULL
    if args.no_gpu:
        if args.doc is None:
            parser.error("--no-gpu writes the docs page: give --doc")
        args.doc.write_text(render_doc(None, dataclasses.asdict(FULL)))
        return 0
    if args.out is None:
        parser.error("give --out DIR for gpu-check.json")
    args.out.mkdir(parents=True, exist_ok=True)
    return _run(args, profile)


def _run(args: argparse.Namespace, profile: Profile) -> int:
    import torch

    out = args.out / "gpu-check.json"
    if args.device == "cuda" and not torch.cuda.is_available():
        out.write_text(json.dumps({"passed": False, "error": NO_GPU}, indent=2) + "\n")
        print(NO_GPU, file=sys.stderr)
        return 2
    found: dict[str, Any] = {}
    try:
        result = measure(profile, args.device, found)
    except BaseException as exc:
        found.update(passed=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        out.write_text(json.dumps(found, indent=2, default=str) + "\n")
        raise
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.doc is not None and result["mode"] == "gpu" and profile == FULL:
        args.doc.write_text(render_doc(result, result["profile"]))
    print("\n".join(summary_lines(result)))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
