"""What every workload's Ray Train loop does the same way: the checkpoint layout, resuming from it, and
reporting an epoch with rank 0's checkpoint.

A checkpoint folder holds `model.pt` (the model's and the optimizer's state dicts, loaded with
`weights_only=True`: never unpickling code) and `meta.json` (the epoch it finished plus what the workload needs
to rebuild the architecture, every param included so a changed default cannot change a loaded model). A loop
resumes from `ray.train.get_checkpoint()`, so a worker killed mid-training restarts from the last finished
epoch (the train step's FailureConfig). Workloads import this; the platform's steps never need to.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

STATE_FILE = "model.pt"
META_FILE = "meta.json"


def save(folder: Path, model: Any, optimizer: Any, epoch: int, meta: Mapping[str, Any]) -> None:
    import torch

    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, folder / STATE_FILE)
    (folder / META_FILE).write_text(json.dumps({**meta, "epoch": epoch}))


def read_meta(folder: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
    return meta


def load_weights(folder: Path, model: Any) -> Any:
    """`model` with the checkpoint's weights, in eval mode."""
    import torch

    model.load_state_dict(torch.load(folder / STATE_FILE, weights_only=True, map_location="cpu")["model"])
    return model.eval()


def resume(model: Any, optimizer: Any, checkpoint: Any) -> int:
    """Load a Ray checkpoint into `model` and `optimizer`; the epoch to start from (0 without one)."""
    if checkpoint is None:
        return 0
    import torch

    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, weights_only=True, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return int(read_meta(Path(folder))["epoch"])


def report_epoch(metrics: Mapping[str, Any], rank: int, save_to: Callable[[Path], None]) -> None:
    """`ray.train.report` one epoch's metrics; rank 0 attaches the checkpoint `save_to` writes (DDP keeps the
    ranks' weights equal, so one copy is the model)."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_to(Path(tmp))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(dict(metrics), checkpoint=checkpoint)
