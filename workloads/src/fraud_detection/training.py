"""Ray Train and Ray Tune loops. They run inside Ray workers, on whatever device Ray assigns.

The train loop checkpoints every epoch and resumes from `ray.train.get_checkpoint()`, so a worker
killed mid-training restarts from the last finished epoch (FailureConfig in the train step).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferry import checkpoints
from fraud_detection.metrics import average_precision, roc_auc
from fraud_detection.model import FraudMLP, build_model, predict_proba, train_epoch
from fraud_detection.params import TrainingParams


def _validation_metrics(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, device: Any) -> dict[str, float]:
    scores = predict_proba(model, x, device)
    if len(np.unique(y)) < 2:
        return {"average_precision": 0.0, "auc_roc": 0.5}
    return {"average_precision": average_precision(y, scores), "auc_roc": roc_auc(y, scores)}


def _setup(config: dict[str, Any], device: Any) -> tuple[FraudMLP, torch.optim.Optimizer]:
    params = TrainingParams.from_values(config["params"])
    model = build_model(config["x_train"].shape[1], params)
    model.set_scaling(config["x_train"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    return model, optimizer


def fit_in_process(prepared: Mapping[str, Any], params: Mapping[str, Any], epochs: int, batch_size: int,
                   seed: int) -> FraudMLP:
    """The model `train_loop_per_worker` trains, trained in this process without Ray (the plan's metric preview):
    the same initial weights for a seed, the same loss and batches."""
    torch.manual_seed(seed)
    model, optimizer = _setup({**prepared, "params": TrainingParams.from_values(params)}, torch.device("cpu"))
    x, y = torch.as_tensor(prepared["x_train"]), torch.as_tensor(prepared["y_train"])
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        train_epoch(model, optimizer, x, y, batch_size, generator)
    return model.eval()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    from ray.train.torch import get_device, prepare_model

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = get_device()
    params = TrainingParams.from_values(config["params"])
    # The initial weights come from the run's seed, not from whatever the worker's global generator holds: the same
    # spec and data train the same model (DDP then broadcasts rank 0's weights to the other ranks).
    torch.manual_seed(int(config.get("seed", 0)))
    model, optimizer = _setup({**config, "params": params}, device)
    first_epoch = checkpoints.resume(model, optimizer, ray.train.get_checkpoint())
    ddp_model = prepare_model(model)
    x = torch.as_tensor(config["x_train"][rank::world], device=device)
    y = torch.as_tensor(config["y_train"][rank::world], device=device)
    generator = torch.Generator().manual_seed(int(config.get("seed", 0)) + rank)
    for epoch in range(first_epoch, int(config["epochs"])):
        loss = train_epoch(ddp_model, optimizer, x, y, int(config["batch_size"]), generator)
        metrics = {"epoch": epoch + 1, "train_loss": loss, "device": str(device), "resumed_from_epoch": first_epoch,
                   **_validation_metrics(model, config["x_valid"], config["y_valid"], device)}
        checkpoints.report_epoch(metrics, rank, partial(_save, model=model, optimizer=optimizer, epoch=epoch + 1,
                                                          params=params))
        _maybe_die(config.get("fault_kill_once"), epoch + 1, rank)


def _maybe_die(fault: dict[str, Any] | None, epoch: int, rank: int) -> None:
    """Fault injection for reliability tests: the rank-0 worker process dies once after `epoch`,
    as a preempted or OOM-killed worker would; the marker file makes it happen only once."""
    if not fault or rank != 0 or epoch != int(fault["epoch"]):
        return
    marker = Path(fault["marker"])
    if marker.exists():
        return
    marker.write_text(str(epoch))
    os._exit(1)


def _save(folder: Path, model: FraudMLP, optimizer: torch.optim.Optimizer, epoch: int,
          params: TrainingParams) -> None:
    # Every param, defaults included: the checkpoint rebuilds its architecture even if a default changes.
    checkpoints.save(folder, model, optimizer, epoch, {"params": params.model_dump(),
                                                       "n_features": int(model.mean.shape[0])})


def load_checkpoint_model(folder: Path) -> torch.nn.Module:
    """Rebuild the trained model from a checkpoint folder without unpickling arbitrary objects."""
    meta = checkpoints.read_meta(folder)
    model = build_model(int(meta["n_features"]), TrainingParams.from_values(meta["params"]))
    return checkpoints.load_weights(folder, model)


def tune_trainable(config: dict[str, Any], data: dict[str, Any], fixed_params: dict[str, Any]) -> None:
    """One trial: fixed params overlaid with the sampled ones (`config`); reports every epoch for ASHA."""
    from ray import tune

    params = TrainingParams.from_values({**fixed_params, **config})
    trial_config = {**data, "params": params}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(int(data.get("seed", 0)))  # as in train_loop_per_worker: trials differ by params, not by luck
    model, optimizer = _setup(trial_config, device)
    x = torch.as_tensor(data["x_train"], device=device)
    y = torch.as_tensor(data["y_train"], device=device)
    generator = torch.Generator().manual_seed(int(data.get("seed", 0)))
    for epoch in range(int(data["epochs"])):
        loss = train_epoch(model, optimizer, x, y, int(data["batch_size"]), generator)
        tune.report({"epoch": epoch + 1, "train_loss": loss,
                     **_validation_metrics(model, data["x_valid"], data["y_valid"], device)})
