"""Ranking quality of ferry's recommender on MovieLens 100K, against popularity and `implicit`'s ALS.

Protocol: each user's ratings in time order, oldest 70 % fit, next 10 % validation, newest 20 % test
(`recommender.split`, through the workload's `prepare()`); every rating counts as an interaction. All models
learn from the fit period only and pick their hyperparameters on validation; the test period decides nothing.
When ranking for the test period every model knows each user's history up to it (fit and validation), as
serving would, and never recommends an item the user already rated. Metrics: recall@10, NDCG@10 and catalogue
coverage (`recommender.ranking`).

* popularity: items ranked by their number of ratings before the test period;
* implicit ALS (implicit 0.7.3, the established library): Optuna TPE (seed 0) over factors, regularisation
  and alpha, as many trials as ferry's tuning, 15 iterations, validation NDCG@10; item factors from the fit
  period, each test user's factors recomputed from their history (`recalculate_user`, ALS's fold-in);
* ferry: the workload's `tune_trainable` (the item autoencoder, `recommender.model`) under ferry's tune step
  (`ferry.steps.tune._tuner`: OptunaSearch, ConcurrencyLimiter, ASHA on epochs) on a private local Ray with
  2 CPUs; the best config is retrained for its best validation epoch count with a plain torch loop over
  several seeds, and encodes each test user's history.

Writes the section of docs/benchmarks/recommender.md. Usage::

    python benchmarks/bench_recommender.py [--samples 24] [--epochs 60] [--seeds 3]
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
for _var in ("RAY_ADDRESS", "FERRY_RAY_STORAGE"):
    os.environ.pop(_var, None)

import argparse  # noqa: E402
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

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for _src in (ROOT / "platform" / "src", ROOT / "workloads" / "src", ROOT):
    sys.path.insert(0, str(_src))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "platform" / "src"), str(ROOT / "workloads" / "src"), os.environ.get("PYTHONPATH", "")]
).rstrip(os.pathsep)

import implicit  # noqa: E402
import optuna  # noqa: E402
import ray  # noqa: E402
import scipy.sparse  # noqa: E402
import threadpoolctl  # noqa: E402
import torch  # noqa: E402

from ferry.spec.models import DataSpec, TrainingSpec, TuneSpec  # noqa: E402
from ferry.steps.tune import _tuner  # noqa: E402
from recommender.model import build_model, score_rows, train_epoch  # noqa: E402
from recommender.params import TrainingParams  # noqa: E402
from recommender.ranking import popularity, ranking_metrics  # noqa: E402
from recommender.workload import RecommenderWorkload  # noqa: E402

METRICS = ("recall_at_10", "ndcg_at_10", "coverage_at_10")
SPACE = {"dim": {"choice": [64, 128, 256, 512]}, "dropout": {"uniform": [0.0, 0.8]},
         "lr": {"loguniform": [1e-4, 1e-2]}, "weight_decay": {"loguniform": [1e-7, 1e-3]}}
BATCH = 128
GRACE_EPOCHS = 10  # ASHA's grace period: an autoencoder's first epochs do not rank configs
WORKLOAD = RecommenderWorkload()


def evaluate_scores(prepared: dict[str, Any], scores: np.ndarray) -> dict[str, float]:
    return WORKLOAD.evaluate(prepared, scores)


def run_popularity(prepared: dict[str, Any]) -> dict[str, float]:
    """Counts of every rating before the test period: the fit rows and the validation rows."""
    t0 = time.perf_counter()
    counts = popularity(prepared["y_train"]) + popularity(prepared["y_valid"])
    scores = np.tile(counts, (len(prepared["x_test"]), 1))
    return {**evaluate_scores(prepared, scores), "seconds": time.perf_counter() - t0}


def _als(prepared: dict[str, Any], params: dict[str, Any]) -> Any:
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=params["factors"], regularization=params["regularization"], alpha=params["alpha"],
        iterations=15, random_state=0)
    model.fit(scipy.sparse.csr_matrix(prepared["y_train"]), show_progress=False)
    return model


def run_als(prepared: dict[str, Any], trials: int) -> dict[str, Any]:
    """Optuna over ALS on validation, as many trials as ferry's tuning; the best refit scored on test."""
    valid_users = prepared["valid_users"]

    def objective(trial: optuna.Trial) -> float:
        params = {"factors": trial.suggest_int("factors", 8, 256, log=True),
                  "regularization": trial.suggest_float("regularization", 1e-3, 10, log=True),
                  "alpha": trial.suggest_float("alpha", 0.5, 100, log=True)}
        model = _als(prepared, params)
        scores = model.user_factors[valid_users] @ model.item_factors.T
        return ranking_metrics(scores, prepared["y_train"][valid_users], prepared["y_valid"])["ndcg_at_10"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=trials)
    tune_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = _als(prepared, study.best_params)
    folded = model.recalculate_user(prepared["test_users"], scipy.sparse.csr_matrix(prepared["x_test"]))
    scores = folded @ model.item_factors.T
    return {**evaluate_scores(prepared, scores), "seconds": time.perf_counter() - t1, "tune_s": tune_s,
            "params": study.best_params, "best_valid": study.best_value}


def tune_ferry(prepared: dict[str, Any], samples: int, epochs: int, scratch: Path) -> dict[str, Any]:
    """ferry's tune step on a private local Ray: same Tuner builder, same trainable, same best-result rule."""
    tune_spec = TuneSpec(num_samples=samples, max_concurrent=2, scheduler="asha", search="optuna",
                         metric="ndcg_at_10", mode="max", cpus_per_trial=1, grace_period=GRACE_EPOCHS, space=SPACE)
    training = TrainingSpec(epochs=epochs, batch_size=BATCH, params={}, tune=tune_spec)
    ctx = SimpleNamespace(spec=SimpleNamespace(spec=SimpleNamespace(training=training)), workload=WORKLOAD,
                          workflow="bench-recommender", settings=SimpleNamespace(state_dir=scratch / "state"))
    data = {key: prepared[key] for key in ("x_train", "y_train", "x_valid", "y_valid")}
    data.update(epochs=epochs, batch_size=BATCH, seed=0)  # as ferry.steps.tune.run
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _temp_dir=str(scratch / "ray"))
    try:
        t0 = time.perf_counter()
        results = _tuner(ctx, tune_spec, data).fit()
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    best = results.get_best_result(metric=tune_spec.metric, mode=tune_spec.mode, scope="all")
    epochs_run = [int(r.metrics_dataframe["epoch"].max()) for r in results
                  if r.error is None and r.metrics_dataframe is not None and not r.metrics_dataframe.empty]
    best_frame = best.metrics_dataframe
    best_epoch = int(best_frame.loc[best_frame["ndcg_at_10"].idxmax(), "epoch"])
    return {"wall_s": wall, "params": {k: best.config[k] for k in SPACE}, "errors": len(results.errors),
            "best_valid": float(best_frame["ndcg_at_10"].max()), "best_epoch": best_epoch,
            "trials": len(results), "epochs_run": sum(epochs_run), "grace": tune_spec.grace_period}


def train_ferry(prepared: dict[str, Any], params: dict[str, Any], epochs: int, seed: int) -> dict[str, float]:
    """Plain torch loop with the workload's model and epoch function, on the fit period; test metrics."""
    t0 = time.perf_counter()
    p = TrainingParams.from_values(params)
    torch.manual_seed(seed)
    model = build_model(prepared["x_train"].shape[1], p)
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    rated = torch.as_tensor(prepared["x_train"])
    for _ in range(epochs):
        train_epoch(model, optimizer, rated, BATCH, generator)
    scores = score_rows(model, prepared["x_test"])
    return {**evaluate_scores(prepared, scores), "seconds": time.perf_counter() - t0}


def machine() -> str:
    model = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (f"{model}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
            f"ray {ray.__version__}, implicit {implicit.__version__}, optuna {optuna.__version__}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def render(args: argparse.Namespace, info: dict[str, Any], res: dict[str, Any]) -> str:
    ferry_runs = res["ferry"]
    mean = {m: statistics.mean(r[m] for r in ferry_runs) for m in METRICS}
    spread = {m: (min(r[m] for r in ferry_runs), max(r[m] for r in ferry_runs)) for m in METRICS}
    tuned, als = res["tune"], res["als"]
    rows = [["popularity", *(f"{res['pop'][m]:.4f}" for m in METRICS), "–", f"{res['pop']['seconds']:.2f}"],
            ["implicit ALS, Optuna-tuned", *(f"{als[m]:.4f}" for m in METRICS), f"{als['tune_s']:.0f}",
             f"{als['seconds']:.2f}"],
            [f"ferry item autoencoder, Ray Tune + Optuna; mean of {args.seeds} seeds (min–max)",
             *(f"{mean[m]:.4f} ({spread[m][0]:.4f}–{spread[m][1]:.4f})" for m in METRICS),
             f"{tuned['wall_s']:.0f}", f"{statistics.mean(r['seconds'] for r in ferry_runs):.2f}"]]
    vs_pop = mean["ndcg_at_10"] / res["pop"]["ndcg_at_10"] - 1
    vs_als = mean["ndcg_at_10"] / als["ndcg_at_10"]
    p = tuned["params"]
    return "\n".join([
        f"Run on {info['date']} by `python benchmarks/bench_recommender.py --samples {args.samples} --epochs "
        f"{args.epochs} --seeds {args.seeds}` (whole run {res['total_s']:.0f} s). Machine: {machine()}.",
        "",
        f"Data: MovieLens 100K ({info['n_ratings']:,} ratings, {info['n_users']} users; {info['n_items']} items "
        f"rated in some fit period). Test period: {info['n_test_users']} users, {info['n_test']:,} ratings; "
        f"{info['dropped']} validation or test ratings of items never rated in a fit period were dropped.",
        "",
        _table(["model", "recall@10", "NDCG@10", "coverage@10", "tuning s", "fit + score s"], rows),
        "",
        f"ferry's tuned model against popularity: NDCG@10 {vs_pop:+.1%} (target ≥ +30 %); against implicit ALS: "
        f"{vs_als:.1%} of its NDCG@10 (target ≥ 95 %).",
        "",
        f"ferry's tuning: {tuned['trials']} trials ({tuned['errors']} errors), {tuned['epochs_run']} epochs run "
        f"in all under ASHA (grace period {tuned['grace']}), {tuned['wall_s']:.0f} s wall; best config dim "
        f"{p['dim']}, dropout {p['dropout']:.3f}, lr {p['lr']:.2e}, weight decay {p['weight_decay']:.2e}, "
        f"validation NDCG@10 {tuned['best_valid']:.4f} at epoch {tuned['best_epoch']}, the epoch count the "
        f"retraining uses. ALS's best: factors "
        f"{als['params']['factors']}, regularisation {als['params']['regularization']:.3g}, alpha "
        f"{als['params']['alpha']:.3g}, validation NDCG@10 {als['best_valid']:.4f}. ALS tunes in one process "
        "with no Ray scheduling; the comparison here is of quality, and ferry's tuning speed is #17's.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=60, help="most epochs a trial may run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1, "blas")  # implicit asks for it: its own threads, not BLAS's
    t_start = time.perf_counter()
    frame = WORKLOAD.load_data(DataSpec(source="dataset", params={}), ROOT)
    prepared = WORKLOAD.prepare(frame, DataSpec(source="dataset", params={}))
    res: dict[str, Any] = {"pop": run_popularity(prepared)}
    print("popularity:", res["pop"], flush=True)
    res["als"] = run_als(prepared, args.samples)
    print("als:", res["als"], flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-recommender-"))
    try:
        res["tune"] = tune_ferry(prepared, args.samples, args.epochs, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("tune:", res["tune"], flush=True)
    res["ferry"] = [train_ferry(prepared, res["tune"]["params"], res["tune"]["best_epoch"], seed)
                    for seed in range(args.seeds)]
    print("ferry:", res["ferry"], flush=True)
    res["total_s"] = time.perf_counter() - t_start
    info = {"date": time.strftime("%Y-%m-%d"), "n_ratings": len(frame), "n_users": len(prepared["user_ids"]),
            "n_items": len(prepared["item_ids"]), "n_test_users": len(prepared["x_test"]),
            "n_test": int(prepared["y_test"].sum()), "dropped": prepared["dropped_cold_items"]}
    body = render(args, info, res)
    print(body)
    if not args.no_write:
        from tests.support.generated_docs import entry_for, write_section

        write_section(entry_for("docs/benchmarks/recommender.md"), body)


if __name__ == "__main__":
    main()
