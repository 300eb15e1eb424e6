"""HPO efficiency: ferry's Tune step (OptunaSearch + ASHA, 2 concurrent trials) vs sequential Optuna.

Both searches tune the fraud_detection FraudMLP over the same space (lr loguniform [1e-4, 1e-2],
hidden choice [32, 64, 128], dropout uniform [0.0, 0.3]) with the same trial budget and the same
prepared data, and both record a wall-clock timestamp (``time.time()``) with every epoch result:

* **Tune**: the Tuner is built by ferry's own ``ferry.steps.tune._tuner`` (OptunaSearch(seed=0)
  behind a ConcurrencyLimiter, ASHAScheduler(time_attr="epoch", max_t=epochs,
  grace_period=TuneSpec default), 1 CPU per trial), running the workload's unmodified
  ``tune_trainable``; a thin wrapper only adds ``wall_time`` to each ``tune.report``.
* **sequential Optuna**: ``optuna.create_study(direction="maximize", sampler=TPESampler(seed=0))``
  and ``study.optimize`` with an objective that trains the same way (seed 0, ``_setup`` + ``train_epoch``
  + the same validation metrics) epoch by epoch, without pruning.  Like Tune's OptunaSearch, it
  reports each epoch's AP to the trial and returns the last epoch's AP to the sampler.

Per run we measure the wall time to finish, the best validation AP reached (max over every epoch
result), and the wall time at which the run first reaches the target AP = min(best of Tune, best
of sequential) of that pair.  Pairs of a window are ordered ABBA (Tune, sequential, sequential, Tune, ...) to
spread out the load of other processes on the machine.  Each Tune run starts its own private
local Ray (``address="local"``) and shuts it down, so the run never joins another cluster.

Writes ``docs/benchmarks/hpo.md`` (and ``hpo.png``).  Every loop is bounded.  Usage::

    python benchmarks/bench_hpo.py [--trials 12] [--epochs 8] [--sizes 7:2,28:1]
"""

from __future__ import annotations

import os

# Before anything imports ray: keep the private cluster on loopback and never join another one.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
for _var in ("RAY_ADDRESS", "FERRY_RAY_STORAGE"):
    os.environ.pop(_var, None)

import argparse  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for _src in (ROOT / "platform" / "src", ROOT / "workloads" / "src"):
    sys.path.insert(0, str(_src))
# Ray workers get the same import path as the driver.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "platform" / "src"), str(ROOT / "workloads" / "src"), os.environ.get("PYTHONPATH", "")]
).rstrip(os.pathsep)

import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import ray  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402

from ferry.spec.models import DataSpec, TrainingSpec, TuneSpec  # noqa: E402
from ferry.steps.tune import _tuner  # noqa: E402
from fraud_detection.features import add_features  # noqa: E402
from fraud_detection.model import train_epoch  # noqa: E402
from fraud_detection.simulator import SimulatorParams, simulate  # noqa: E402
from fraud_detection.training import _setup, _validation_metrics  # noqa: E402
from fraud_detection.workload import FraudDetectionWorkload  # noqa: E402

OUTPUT = ROOT / "docs" / "benchmarks" / "hpo.md"
PLOT = ROOT / "docs" / "benchmarks" / "hpo.png"
METRIC = "average_precision"
SPACE = {"lr": {"loguniform": [1e-4, 1e-2]}, "hidden": {"choice": [32, 64, 128]}, "dropout": {"uniform": [0.0, 0.3]}}
FIXED_PARAMS = {"hidden": 64, "lr": 0.003, "dropout": 0.1}  # gitops/models/fraud-detector.yaml; all overridden
TRAIN_END = "2018-08-01"  # the handbook's training week ends 2018-07-31; longer windows end there too


# --------------------------------------------------------------------------- data


def prepare(frame: pd.DataFrame, train_days: int) -> dict[str, Any]:
    """The workload's own prepare(): train window ending 2018-07-31, 7-day delay; last 20 % = validation."""
    start = (pd.Timestamp(TRAIN_END) - pd.Timedelta(days=train_days)).date().isoformat()
    spec = DataSpec(source="simulator", params={},
                    split={"train_start": start, "train_days": train_days, "delay_days": 7, "test_days": 7})
    prepared = FraudDetectionWorkload().prepare(frame, spec)
    prepared["train_start"] = start
    return prepared


# --------------------------------------------------------------------------- Tune


def timed_trainable(config: dict[str, Any], **injected: Any) -> None:
    """ferry's tune_trainable, unchanged, with ``wall_time`` (time.time()) added to every report.

    ``injected`` is what ferry's ``tune.with_parameters`` passes (``data``, ``fixed_params``).
    """
    import time as _time
    import warnings as _warnings

    import ray.tune as ray_tune
    import torch

    from fraud_detection.training import tune_trainable

    started = _time.time()
    _warnings.filterwarnings("ignore", category=UserWarning)
    original = ray_tune.report

    def report(metrics: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        original({**metrics, "wall_time": _time.time(), "trial_start": started,
                  "torch_threads": torch.get_num_threads()}, *args, **kwargs)

    ray_tune.report = report
    try:
        tune_trainable(config, **injected)
    finally:
        ray_tune.report = original


def run_tune(prepared: dict[str, Any], trials: int, epochs: int, batch: int, grace: int | None,
             scratch: Path, tag: str) -> dict[str, Any]:
    """One Tune search on a fresh private Ray; returns its epoch history (wall_time relative to fit start)."""
    tune_kwargs: dict[str, Any] = {"num_samples": trials, "max_concurrent": 2, "scheduler": "asha",
                                   "search": "optuna", "metric": METRIC, "mode": "max",
                                   "cpus_per_trial": 1, "space": SPACE}
    if grace is not None:
        tune_kwargs["grace_period"] = grace
    tune_spec = TuneSpec(**tune_kwargs)
    training = TrainingSpec(epochs=epochs, batch_size=batch, params=FIXED_PARAMS, tune=tune_spec)
    state_dir = scratch / f"state-{tag}"
    state_dir.mkdir(parents=True)
    ctx = SimpleNamespace(spec=SimpleNamespace(spec=SimpleNamespace(training=training)),
                          workload=SimpleNamespace(tune_trainable=timed_trainable),
                          workflow=f"bench-hpo-{tag}", settings=SimpleNamespace(state_dir=state_dir))
    data = {key: prepared[key] for key in ("x_train", "y_train", "x_valid", "y_valid")}
    data.update(epochs=epochs, batch_size=batch, seed=0)

    t_init = time.time()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", _temp_dir=str(scratch / f"ray-{tag}"))
    init_s = time.time() - t_init
    try:
        t0 = time.time()
        results = _tuner(ctx, tune_spec, data).fit()
        wall = time.time() - t0
    finally:
        ray.shutdown()
    rows, configs = [], []
    for i, result in enumerate(results):
        if result.error is not None:
            print(f"  tune trial {i} failed: {result.error}")
        frame = result.metrics_dataframe
        configs.append({k: result.config[k] for k in SPACE})
        if frame is None or frame.empty:
            continue
        for _, r in frame.iterrows():
            rows.append({"trial": i, "epoch": int(r["epoch"]), "ap": float(r[METRIC]),
                         "t": float(r["wall_time"]) - t0, "start": float(r["trial_start"]) - t0,
                         "threads": int(r["torch_threads"])})
    return {"wall_s": wall, "init_s": init_s, "history": pd.DataFrame(rows), "configs": configs,
            "errors": len(results.errors), "grace": tune_spec.grace_period}


# --------------------------------------------------------------------------- sequential Optuna


def run_sequential(prepared: dict[str, Any], trials: int, epochs: int, batch: int) -> dict[str, Any]:
    """Plain Optuna: TPESampler(seed=0), one trial after another, every trial trained for all epochs."""
    rows: list[dict[str, Any]] = []
    configs: list[dict[str, Any]] = []
    x = torch.as_tensor(prepared["x_train"])
    y = torch.as_tensor(prepared["y_train"])
    t0 = 0.0

    def objective(trial: optuna.Trial) -> float:
        params = {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
                  "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
                  "dropout": trial.suggest_float("dropout", 0.0, 0.3)}
        configs.append(params)
        config = {**prepared, "params": {**FIXED_PARAMS, **params}}
        torch.manual_seed(0)  # as ferry's tune_trainable seeds each trial: a config starts from the same weights
        model, optimizer = _setup(config, "cpu")
        generator = torch.Generator().manual_seed(0)
        ap = math.nan
        for epoch in range(epochs):
            train_epoch(model, optimizer, x, y, batch, generator)
            ap = _validation_metrics(model, prepared["x_valid"], prepared["y_valid"], "cpu")[METRIC]
            rows.append({"trial": trial.number, "epoch": epoch + 1, "ap": ap, "t": time.time() - t0})
            trial.report(ap, epoch + 1)  # recorded only; nothing calls should_prune()
        return ap

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    t0 = time.time()
    study.optimize(objective, n_trials=trials)
    wall = time.time() - t0
    return {"wall_s": wall, "history": pd.DataFrame(rows), "configs": configs}


# --------------------------------------------------------------------------- analysis


def first_reach(history: pd.DataFrame, target: float) -> float:
    hit = history[history["ap"] >= target - 1e-12]
    return float(hit["t"].min()) if len(hit) else math.nan


def summarise(tune_run: dict[str, Any], seq_run: dict[str, Any]) -> dict[str, Any]:
    best_t, best_s = float(tune_run["history"]["ap"].max()), float(seq_run["history"]["ap"].max())
    target = min(best_t, best_s)
    reach_t, reach_s = first_reach(tune_run["history"], target), first_reach(seq_run["history"], target)
    epochs_by_trial = tune_run["history"].groupby("trial")["epoch"].max()
    same = sum(_same(a, b) for a, b in zip(tune_run["configs"], seq_run["configs"], strict=False))
    return {"best_tune": best_t, "best_seq": best_s, "target": target, "reach_tune": reach_t,
            "reach_seq": reach_s, "wall_tune": tune_run["wall_s"], "wall_seq": seq_run["wall_s"],
            "init_s": tune_run["init_s"],
            "epochs_tune": len(tune_run["history"]), "epochs_seq": len(seq_run["history"]),
            "stopped_early": int((epochs_by_trial < seq_run["history"]["epoch"].max()).sum()),
            "same_configs": same, "reach_ratio": reach_s / reach_t,
            "wall_ratio": seq_run["wall_s"] / tune_run["wall_s"],
            **tune_breakdown(tune_run), "epoch_seq": _median_epoch(seq_run["history"]),
            "epoch_ratio_same": _epoch_ratio_same(tune_run, seq_run),
            "threads": sorted(set(tune_run["history"]["threads"])), **_seq_best_in_tune(tune_run, seq_run)}


def _seq_best_in_tune(tune_run: dict[str, Any], seq_run: dict[str, Any]) -> dict[str, Any]:
    """What Tune did with the trial that gave the sequential study its best AP (when it sampled the same config)."""
    seq_h, tune_h = seq_run["history"], tune_run["history"]
    trial = int(seq_h.loc[seq_h["ap"].idxmax(), "trial"])
    out: dict[str, Any] = {"seq_best_trial": trial, "seq_best_config": seq_run["configs"][trial],
                           "seq_best_epoch": int(seq_h.loc[seq_h["ap"].idxmax(), "epoch"]),
                           "tune_epochs_of_it": None, "tune_ap_of_it": math.nan}
    if trial < len(tune_run["configs"]) and _same(tune_run["configs"][trial], seq_run["configs"][trial]):
        mine = tune_h[tune_h["trial"] == trial]
        out["tune_epochs_of_it"] = int(mine["epoch"].max()) if len(mine) else 0
        out["tune_ap_of_it"] = float(mine["ap"].max()) if len(mine) else math.nan
    return out


def _epoch_ratio_same(tune_run: dict[str, Any], seq_run: dict[str, Any]) -> float:
    """Median over trials with the same config of (Tune s per epoch / sequential s per epoch)."""
    ratios = []
    for i, (a, b) in enumerate(zip(tune_run["configs"], seq_run["configs"], strict=False)):
        tune_h = tune_run["history"][tune_run["history"]["trial"] == i]
        seq_h = seq_run["history"][seq_run["history"]["trial"] == i]
        if _same(a, b) and len(tune_h) >= 2:
            ratios.append(_median_epoch(tune_h) / _median_epoch(seq_h))
    return float(statistics.median(ratios)) if ratios else math.nan


def _median_epoch(history: pd.DataFrame) -> float:
    """Median wall time between two consecutive epoch reports of the same trial."""
    gaps = history.sort_values(["trial", "epoch"]).groupby("trial")["t"].diff().dropna()
    return float(gaps.median()) if len(gaps) else math.nan


def tune_breakdown(run: dict[str, Any]) -> dict[str, float]:
    """Where Tune's wall time goes: first trial start, in-trainable time, idle CPU slots (2 per second)."""
    h = run["history"]
    per_trial = h.groupby("trial").agg(start=("start", "first"), end=("t", "max"), first=("t", "min"))
    in_trial = float((per_trial["end"] - per_trial["start"]).sum())
    return {"first_start": float(per_trial["start"].min()), "in_trial_s": in_trial,
            "idle_slot_per_trial": (2 * run["wall_s"] - in_trial) / max(len(per_trial), 1),
            "first_epoch_tune": float((per_trial["first"] - per_trial["start"]).median()),
            "epoch_tune": _median_epoch(h)}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["hidden"] == b["hidden"] and math.isclose(a["lr"], b["lr"], rel_tol=1e-9) and math.isclose(
        a["dropout"], b["dropout"], rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------- report


def machine() -> str:
    model = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{model}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}, "
            f"optuna {optuna.__version__}, scikit-learn {sklearn.__version__}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _f(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render(args: argparse.Namespace, sections: list[dict[str, Any]], load: tuple[tuple[float, ...], ...],
           total_s: float, grace: int, plotted: bool) -> str:
    parts = [
        "# Benchmark: HPO efficiency, ferry's Tune step vs sequential Optuna",
        "",
        f"Generated by `python benchmarks/bench_hpo.py --trials {args.trials} --epochs {args.epochs} "
        f"--sizes {args.sizes}` on {datetime.date.today().isoformat()} "
        f"(whole run {total_s:.0f} s).",
        "",
        f"Machine: {machine()}.  Load average (1 min) at start / end: {load[0][0]:.2f} / {load[1][0]:.2f}; "
        "the machine was shared with other Ray pipelines during the run, so wall times are noisy.",
        "",
        "## Setup",
        "",
        "- Data: default simulator (5000 customers, 10000 terminals, 183 days, seed 0) + `add_features`, "
        "split by the workload's `prepare()`: training window ending 2018-07-31, 7-day delay; the last 20 % "
        "of the window (time order) is the validation set, on which every epoch's average precision (AP) is "
        "measured.",
        f"- Space: lr loguniform [1e-4, 1e-2], hidden choice [32, 64, 128], dropout uniform [0.0, 0.3]; "
        f"budget {args.trials} trials × up to {args.epochs} epochs, batch 512, `train_epoch` shuffling seed 0.",
        f"- **Tune** (ferry): Tuner built by `ferry.steps.tune._tuner`: OptunaSearch(seed=0) in a "
        f"ConcurrencyLimiter(2), max_concurrent_trials 2, ASHAScheduler(time_attr=\"epoch\", max_t={args.epochs}, "
        f"grace_period={grace}, reduction_factor 4), 1 CPU per trial, metric `average_precision` (max); private "
        "local Ray `ray.init(address=\"local\", num_cpus=2)` started and shut down around each run.  The "
        "trainable is the workload's `tune_trainable`, wrapped only to add `time.time()` to each report.",
        "- **sequential Optuna**: `optuna.create_study(direction=\"maximize\", sampler=TPESampler(seed=0))`, "
        "`study.optimize(objective, n_trials)`; the objective trains with the same `_setup`/`train_epoch`/"
        "validation code for all epochs (no pruning) and returns the last epoch's AP (what OptunaSearch "
        "tells TPE for a Tune trial).  torch runs with 1 intra-op thread, like each 1-CPU Ray trial: on "
        "this shared 2-core machine 2 threads made an epoch 1.4–18x slower in a probe.",
        "- Time to target: target = min(best AP of Tune, best AP of sequential) of the pair; time = first "
        "epoch report with AP ≥ target, measured from the start of `Tuner.fit()` / `study.optimize()`. "
        "Tune's times exclude `ray.init` (shown separately; ferry's step joins a running cluster).  "
        "Pairs are ordered ABBA (Tune, sequential, then sequential, Tune) so that load drift hits both.",
    ]
    for sec in sections:
        parts += ["", _section(sec, args.trials)]
    threads = sorted({t for sec in sections for p in sec["pairs"] for t in p["threads"]})
    parts += ["", "Idle CPU slot per trial = (2 × wall − time inside trainables) / trials: the "
              "scheduling, actor start-up and result-processing gap a trial costs on top of its training.  "
              "\"s per epoch\" is the median gap between consecutive epoch reports of a trial (the first epoch, "
              "which includes set-up, excluded); ASHA lets mostly the best (often hidden 128, slower) configs run "
              "long, so the per-config ratio in the last column is the fair comparison of epoch speed.  "
              f"torch intra-op threads inside the Tune trials: {threads}.",
              "", "Ratios above 1 mean Tune was faster.  \"Same first configs\" counts trials (by index) whose "
              "sampled (lr, hidden, dropout) equal the sequential study's; TPE's first 10 trials are random "
              "draws, so with the same seed both searches start from the same configurations; both seed a trial's "
              "initial weights and batch order alike (seed 0, as ferry's `tune_trainable` does), so a config "
              "trains to the same AP curve in both and they differ by ASHA's stopping and the parallelism."]
    if plotted:
        parts += ["", "![best validation AP so far vs wall time](hpo.png)"]
    return "\n".join(parts) + "\n"


def _section(sec: dict[str, Any], trials: int) -> str:
    pairs = sec["pairs"]
    head = (f"## Training window {sec['days']} days ({sec['n_train']:,} fit rows, {sec['n_valid']:,} validation "
            f"rows, train_start {sec['start']})")
    rows = []
    for i, s in enumerate(pairs, 1):
        rows.append([str(i), "Tune + OptunaSearch + ASHA (2 concurrent)", _f(s["wall_tune"]), _f(s["best_tune"], 4),
                     _f(s["target"], 4), _f(s["reach_tune"]), str(s["epochs_tune"]),
                     f"{s['stopped_early']} / {trials}", _f(s["init_s"])])
        rows.append([str(i), "sequential Optuna (TPE, no pruning)", _f(s["wall_seq"]), _f(s["best_seq"], 4),
                     _f(s["target"], 4), _f(s["reach_seq"]), str(s["epochs_seq"]), f"0 / {trials}", "–"])
    results = _table(["pair", "run", "wall to finish s", "best val AP", "target AP", "time to target s",
                      "epochs trained", "trials stopped early", "ray.init s"], rows)
    for s in pairs:
        s["wall_ratio_init"] = s["wall_seq"] / (s["wall_tune"] + s["init_s"])
    ratio_rows = [[str(i), f"{s['reach_ratio']:.2f}x", f"{s['wall_ratio']:.2f}x", f"{s['wall_ratio_init']:.2f}x",
                   f"{s['same_configs']} / {trials}"] for i, s in enumerate(pairs, 1)]
    if len(pairs) > 1:
        ratio_rows.append(["median", *(f"{statistics.median(p[k] for p in pairs):.2f}x"
                                       for k in ("reach_ratio", "wall_ratio", "wall_ratio_init")), "–"])
    ratios = _table(["pair", "time to target: sequential / Tune", "wall to finish: sequential / Tune",
                     "wall to finish: sequential / (Tune + ray.init)", "same first configs sampled"], ratio_rows)
    breakdown = _table(
        ["pair", "Tune: fit() start → first trainable starts s", "Tune: time in trainables s (sum over trials)",
         "Tune: idle CPU slot per trial s", "Tune: trainable start → 1st report s", "Tune: s per epoch",
         "sequential: s per epoch", "s per epoch Tune / sequential, same configs"],
        [[str(i), _f(s["first_start"]), _f(s["in_trial_s"]), _f(s["idle_slot_per_trial"]),
          _f(s["first_epoch_tune"], 2), _f(s["epoch_tune"], 2), _f(s["epoch_seq"], 2), f"{s['epoch_ratio_same']:.2f}x"]
         for i, s in enumerate(pairs, 1)])
    notes = []
    for i, s in enumerate(pairs, 1):
        c = s["seq_best_config"]
        fate = ("Tune sampled a different config there" if s["tune_epochs_of_it"] is None else
                f"Tune ran the same config for {s['tune_epochs_of_it']} epoch(s) (best AP there "
                f"{s['tune_ap_of_it']:.4f})")
        notes.append(f"- pair {i}: sequential's best AP came from trial {s['seq_best_trial']} (lr {c['lr']:.2e}, "
                     f"hidden {c['hidden']}, dropout {c['dropout']:.3f}) at epoch {s['seq_best_epoch']}; {fate}.")
    return "\n".join([head, "", results, "", ratios, "", "Where the time goes (medians over trials / epoch "
                      "reports):", "", breakdown, "", "The sequential study's best trial under ASHA:", "", *notes])


def plot(sections: list[dict[str, Any]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(sections), figsize=(6 * len(sections), 4), squeeze=False)
    for ax, sec in zip(axes[0], sections, strict=True):
        for i, (tune_run, seq_run) in enumerate(sec["runs"]):
            for run, label, colour in ((tune_run, "Tune+ASHA", "tab:blue"), (seq_run, "sequential", "tab:orange")):
                h = run["history"].sort_values("t")
                ax.step(h["t"], h["ap"].cummax(), where="post", color=colour, alpha=1.0 if i == 0 else 0.5,
                        label=f"{label} (pair {i + 1})")
        ax.set_title(f"{sec['days']}-day training window")
        ax.set_xlabel("wall time since start of search (s)")
        ax.set_ylabel("best validation AP so far")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    plt.close(fig)
    return True


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        days, _, pairs = item.partition(":")
        out.append((int(days), int(pairs or 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--sizes", default="7:2,28:1",
                        help="training windows as DAYS:PAIRS, comma-separated; a window's pairs run ABBA")
    parser.add_argument("--grace-period", type=int, default=None, help="ASHA grace period (TuneSpec default)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    t_start = time.time()

    frame = add_features(simulate(SimulatorParams()))
    print(f"data: {len(frame):,} transactions in {time.time() - t_start:.1f} s")
    scratch = Path(tempfile.mkdtemp(prefix="bench-hpo-"))
    sections, grace = [], 1
    try:
        for days, pairs_wanted in _sizes(args.sizes):
            prepared = prepare(frame, days)
            tune_runs: list[dict[str, Any]] = []
            seq_runs: list[dict[str, Any]] = []
            for rep in range(pairs_wanted):
                order = ("tune", "seq") if rep % 2 == 0 else ("seq", "tune")
                for kind in order:
                    if kind == "tune":
                        run = run_tune(prepared, args.trials, args.epochs, args.batch_size, args.grace_period,
                                       scratch, f"{days}d-{rep}")
                        grace = run["grace"]
                        tune_runs.append(run)
                    else:
                        run = run_sequential(prepared, args.trials, args.epochs, args.batch_size)
                        seq_runs.append(run)
                    print(f"{days}d pair {rep + 1} {kind:>4}: wall {run['wall_s']:.1f} s, "
                          f"best AP {run['history']['ap'].max():.4f}, epochs {len(run['history'])}", flush=True)
            pairs = [summarise(t, s) for t, s in zip(tune_runs, seq_runs, strict=True)]
            for i, p in enumerate(pairs, 1):
                print(f"{days}d pair {i}: target {p['target']:.4f}; reached by Tune at {p['reach_tune']:.1f} s, "
                      f"by sequential at {p['reach_seq']:.1f} s -> ratio {p['reach_ratio']:.2f}x; "
                      f"wall ratio {p['wall_ratio']:.2f}x; same configs {p['same_configs']}")
            sections.append({"days": days, "start": prepared["train_start"], "n_train": len(prepared["y_train"]),
                             "n_valid": len(prepared["y_valid"]), "pairs": pairs,
                             "runs": list(zip(tune_runs, seq_runs, strict=True))})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = time.time() - t_start
    load_end = os.getloadavg()
    if args.no_write:
        return
    plotted = plot(sections)
    OUTPUT.write_text(render(args, sections, (load_start, load_end), total, grace, plotted))
    print(f"wrote {OUTPUT.relative_to(ROOT)} in {total:.0f} s total")


if __name__ == "__main__":
    main()
