"""Ray Train and Ray Tune loops for the recommender; they run inside Ray workers, on the device Ray assigns.

The data dict is what `RecommenderWorkload.prepare` returns: rows of rated items per user. `x_train` (the
fit period) is both input and target; `x_valid` holds the validation users' fit rows (what they rated before,
which validation never recommends) and `y_valid` what they rated next. The train loop checkpoints every
epoch and resumes from `ray.train.get_checkpoint()`, as the fraud workload's does.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferry import checkpoints
from recommender.model import ItemAutoencoder, build_model, score_rows, train_epoch
from recommender.params import TrainingParams
from recommender.ranking import ranking_metrics


def validation_metrics(model: torch.nn.Module, data: dict[str, Any], device: Any) -> dict[str, float]:
    rated = np.asarray(data["x_valid"])
    return ranking_metrics(score_rows(model, rated, device), rated, np.asarray(data["y_valid"]))


def _setup(data: dict[str, Any], params: TrainingParams, device: Any) -> tuple[ItemAutoencoder,
                                                                              torch.optim.Optimizer]:
    model = build_model(np.asarray(data["x_train"]).shape[1], params).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def tune_trainable(config: dict[str, Any], data: dict[str, Any], fixed_params: dict[str, Any]) -> None:
    """One trial: fixed params overlaid with the sampled ones; reports validation metrics every epoch (ASHA)."""
    from ray import tune

    params = TrainingParams.from_values({**fixed_params, **config})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed = int(data.get("seed", 0))
    torch.manual_seed(seed)  # trials differ by params, not by luck
    model, optimizer = _setup(data, params, device)
    rated = torch.as_tensor(np.asarray(data["x_train"]), device=device)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(int(data["epochs"])):
        loss = train_epoch(model, optimizer, rated, int(data["batch_size"]), generator)
        tune.report({"epoch": epoch + 1, "train_loss": loss, **validation_metrics(model, data, device)})


def fit_in_process(prepared: Mapping[str, Any], params: Mapping[str, Any], epochs: int, batch_size: int,
                   seed: int) -> ItemAutoencoder:
    """The model `train_loop_per_worker` trains, trained in this process without Ray (the plan's metric preview):
    the same initial weights for a seed, the same loss and batches."""
    torch.manual_seed(seed)
    model, optimizer = _setup(dict(prepared), TrainingParams.from_values(params), torch.device("cpu"))
    rated, generator = torch.as_tensor(np.asarray(prepared["x_train"])), torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        train_epoch(model, optimizer, rated, batch_size, generator)
    return model.eval()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    from ray.train.torch import get_device, prepare_model

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = get_device()
    params = TrainingParams.from_values(config["params"])
    torch.manual_seed(int(config.get("seed", 0)))  # the run's seed decides the initial weights
    model, optimizer = _setup(config, params, device)
    first_epoch = checkpoints.resume(model, optimizer, ray.train.get_checkpoint())
    ddp_model = prepare_model(model)
    rated = torch.as_tensor(np.asarray(config["x_train"])[rank::world], device=device)
    generator = torch.Generator().manual_seed(int(config.get("seed", 0)) + rank)
    for epoch in range(first_epoch, int(config["epochs"])):
        loss = train_epoch(ddp_model, optimizer, rated, int(config["batch_size"]), generator)
        metrics = {"epoch": epoch + 1, "train_loss": loss, "device": str(device), "resumed_from_epoch": first_epoch,
                   **validation_metrics(model, config, device)}
        checkpoints.report_epoch(metrics, rank, partial(save, model=model, optimizer=optimizer, epoch=epoch + 1,
                                                          params=params))


def save(folder: Path, model: ItemAutoencoder, optimizer: torch.optim.Optimizer, epoch: int,
         params: TrainingParams) -> None:
    checkpoints.save(folder, model, optimizer, epoch, {"params": params.model_dump(),
                                                       "n_items": model.encode.in_features})


def load_checkpoint_model(folder: Path) -> ItemAutoencoder:
    """Rebuild the trained model from a checkpoint folder without unpickling arbitrary objects."""
    meta = checkpoints.read_meta(folder)
    model = build_model(int(meta["n_items"]), TrainingParams.from_values(meta["params"]))
    return checkpoints.load_weights(folder, model)
