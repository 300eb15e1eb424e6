"""`ferry step tune`: Ray Tune with OptunaSearch and ASHA over the spec's search space."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow

from ferry.contract import names
from ferry.contract.errors import StepFailed
from ferry.spec.models import SearchDomain, TuneSpec
from ferry.steps import gpu
from ferry.steps.context import StepContext
from ferry.steps.data import load_prepared
from ferry.steps.params import training_params
from ferry.steps.ray_session import connect, storage_path

BEST_PARAM_PREFIX = "best."


def search_space(tune_spec: TuneSpec) -> dict[str, Any]:
    from ray import tune

    def domain(d: SearchDomain) -> Any:
        if d.kind == "uniform":
            return tune.uniform(*d.args)
        if d.kind == "loguniform":
            return tune.loguniform(*d.args)
        if d.kind == "randint":
            low, high = d.args
            return tune.randint(low, high + 1)  # spec bounds are inclusive, Ray's upper bound is not
        return tune.choice(list(d.args))

    return {name: domain(d) for name, d in tune_spec.space.items()}


def _tuner(ctx: StepContext, tune_spec: TuneSpec, data: dict[str, Any]) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    epochs = ctx.spec.spec.training.epochs
    scheduler = ASHAScheduler(max_t=epochs, grace_period=min(tune_spec.grace_period, epochs),
                              time_attr="epoch") if tune_spec.scheduler == "asha" else FIFOScheduler()
    search = OptunaSearch(seed=0) if tune_spec.search == "optuna" else None
    # with_parameters puts the arrays in the object store once instead of into every trial's config.
    # Each trial checks its GPU before the workload runs: a trial must never train on the CPU holding a GPU.
    trial = gpu.guarded(ctx.workload.tune_trainable, gpu.request(ctx.spec, names.STEP_TUNE))
    trainable = tune.with_resources(
        tune.with_parameters(trial, data=data, fixed_params=dict(ctx.spec.spec.training.params)),
        {"cpu": tune_spec.cpus_per_trial, "gpu": tune_spec.gpus_per_trial})
    # reuse_actors: a trial runs in the actor of a finished one (every trial asks the same resources), keeping
    # its process, imports and fetched data; a new process per trial cost 8-9 s of a short trial on 2 cores.
    return tune.Tuner(
        trainable,
        param_space=search_space(tune_spec),
        tune_config=tune.TuneConfig(
            metric=tune_spec.metric, mode=tune_spec.mode, num_samples=tune_spec.num_samples,
            search_alg=ConcurrencyLimiter(search, tune_spec.max_concurrent) if search else None,
            max_concurrent_trials=tune_spec.max_concurrent, scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(name=f"{ctx.workflow}-tune", storage_path=storage_path(ctx.settings),
                                  verbose=0),
    )


def run(ctx: StepContext) -> None:
    tune_spec = ctx.spec.spec.training.tune
    if tune_spec is None or ctx.finished_run() is not None:
        return
    training_params(ctx, ctx.spec.spec.training.params)  # fail here, not in every trial
    prepared = load_prepared(ctx)
    training = ctx.spec.spec.training
    data = {key: prepared[key] for key in ("x_train", "y_train", "x_valid", "y_valid")}
    data.update(epochs=training.epochs, batch_size=training.batch_size, seed=0)
    connect(ctx.settings)
    gpu.check_ray_cluster(gpu.request(ctx.spec, names.STEP_TUNE))  # before any trial
    with ctx.mlflow_run():
        results = _tuner(ctx, tune_spec, data).fit()
        if unavailable := next(filter(None, map(gpu.raised_in, results.errors)), None):
            raise unavailable
        best = results.get_best_result(metric=tune_spec.metric, mode=tune_spec.mode, scope="all")
        if best is None or best.metrics is None:
            raise StepFailed(f"no Tune trial reported {tune_spec.metric!r}; see the trial errors in the Ray logs")
        sampled = {k: v for k, v in best.config.items() if k in tune_spec.space}
        mlflow.log_params({f"{BEST_PARAM_PREFIX}{k}": v for k, v in sampled.items()})
        mlflow.log_metrics({f"best_{tune_spec.metric}": float(best.metrics[tune_spec.metric]),
                            "trials": float(len(results)), "trial_errors": float(len(results.errors))})
        _log_trials(results)


def _log_trials(results: Any) -> None:
    frame = results.get_dataframe()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.csv"
        frame.to_csv(path, index=False)
        mlflow.log_artifact(str(path), "tune")


def best_params(ctx: StepContext) -> dict[str, Any]:
    """The fixed params overlaid with Tune's best sample (typed back from MLflow's strings)."""
    params: dict[str, Any] = dict(ctx.spec.spec.training.params)
    tune_spec = ctx.spec.spec.training.tune
    if tune_spec is None:
        return params
    run = ctx.require_run(names.STEP_TUNE)
    for name, domain in tune_spec.space.items():
        raw = run.data.params.get(f"{BEST_PARAM_PREFIX}{name}")
        if raw is not None:
            params[name] = _typed(raw, domain)
    return params


def _typed(raw: str, domain: SearchDomain) -> Any:
    if domain.kind == "randint":
        return int(raw)
    if domain.kind == "choice":
        return next((value for value in domain.args if str(value) == raw), raw)
    return float(raw)
