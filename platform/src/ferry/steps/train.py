"""`ferry step train`: Ray Train TorchTrainer with the spec's workers, CPUs and GPUs.

Checkpoints every epoch and a FailureConfig: a worker killed mid-training restarts from the last
checkpoint. The run name is the workflow's, so a rerun of the step resumes the same Train run.
"""

from __future__ import annotations

from typing import Any

import mlflow

from ferry.contract import names
from ferry.contract.errors import StepFailed
from ferry.steps import gpu
from ferry.steps.context import StepContext
from ferry.steps.data import load_prepared
from ferry.steps.params import training_params
from ferry.steps.ray_session import connect, storage_path
from ferry.steps.tune import best_params

CHECKPOINT_ARTIFACT = "checkpoint"


def _trainer(ctx: StepContext, config: dict[str, Any]) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    training = ctx.spec.spec.training
    res = training.resources
    loop = gpu.guarded(ctx.workload.train_loop_per_worker, gpu.request(ctx.spec, names.STEP_TRAIN))
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {})}
    return TorchTrainer(
        train_loop_per_worker=loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=res.gpus_per_worker > 0,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(
            name=f"{ctx.workflow}-train",
            storage_path=storage_path(ctx.settings),
            failure_config=FailureConfig(max_failures=training.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )


def run(ctx: StepContext) -> None:
    if ctx.finished_run() is not None:
        return
    params = training_params(ctx, best_params(ctx)).model_dump(exclude_unset=True)
    prepared = load_prepared(ctx)
    training = ctx.spec.spec.training
    config = {key: prepared[key] for key in ("x_train", "y_train", "x_valid", "y_valid")}
    config.update(params=params, epochs=training.epochs, batch_size=training.batch_size, seed=0)
    connect(ctx.settings)
    gpu.check_ray_cluster(gpu.request(ctx.spec, names.STEP_TRAIN))  # before any training
    with ctx.mlflow_run():
        mlflow.log_params({**{f"param.{k}": v for k, v in params.items()}, "workers": training.resources.workers,
                           "gpus_per_worker": training.resources.gpus_per_worker, "epochs": training.epochs})
        result = _trainer(ctx, config).fit()
        if unavailable := gpu.raised_in(result.error):
            raise unavailable
        if result.error is not None or result.checkpoint is None:
            raise StepFailed(f"training failed: {result.error or 'no checkpoint was reported'}")
        _log_history(result)
        with result.checkpoint.as_directory() as folder:
            mlflow.log_artifacts(folder, CHECKPOINT_ARTIFACT)


def _log_history(result: Any) -> None:
    history = result.metrics_dataframe
    numeric = [c for c in ("train_loss", "average_precision", "auc_roc") if history is not None and c in history]
    for _, row in (history.iterrows() if history is not None else []):
        mlflow.log_metrics({f"valid_{c}" if c != "train_loss" else c: float(row[c]) for c in numeric},
                           step=int(row.get("epoch", 0)))
    device = (result.metrics or {}).get("device")
    if device:
        mlflow.set_tag(names.TAG_TRAIN_DEVICE, device)
