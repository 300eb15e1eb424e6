"""A tune or train step that asked for GPUs runs on GPUs or fails, naming what it asked for and what it found.

Without this a Tune trial on a node whose torch has no CUDA (the CPU image on a GPU node) quietly trains on the
CPU while holding a GPU, and Ray Train fails at its first CUDA call, deep in a worker. Two checks, both before
any training: the driver checks that the Ray cluster offers the GPUs at all (otherwise Ray would wait for them
until the step's deadline), and every worker or trial checks, in its own process and before the workload's code
runs, that torch sees a CUDA device for each GPU it holds (`guarded`). Not retried: the image, the node or the
spec must change.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ferry.contract import names
from ferry.contract.errors import StepFailed
from ferry.spec.models import ModelSpec


class GpuUnavailable(StepFailed):
    """A step asked for GPUs it cannot use: it fails instead of running on the CPU."""


@dataclass(frozen=True)
class GpuRequest:
    step: str
    gpus: float  # per worker (train) or per trial (tune); fractions share one device
    per: str  # "worker" or "trial"
    setting: str  # the spec field that asked, for the message
    count: int = 1  # workers that must hold their GPUs at once (Ray Train starts them together)

    @property
    def devices(self) -> int:
        """CUDA devices one worker must see: Ray assigns a fractional GPU one whole device to share."""
        return math.ceil(self.gpus)

    @property
    def asked(self) -> str:
        return f"{self.step} asked for {self.gpus:g} GPU per {self.per}"


def request(model: ModelSpec, step: str) -> GpuRequest:
    training = model.spec.training
    if step == names.STEP_TUNE and training.tune is not None:
        return GpuRequest(step, training.tune.gpus_per_trial, "trial", "training.tune.gpus_per_trial")
    res = training.resources
    return GpuRequest(step, res.gpus_per_worker, "worker", "training.resources.gpus_per_worker", res.workers)


def check_cluster(req: GpuRequest, cluster_gpus: float) -> None:
    """On the driver, before fit: a Ray cluster without the GPUs would leave the step waiting for them."""
    needed = req.gpus * req.count
    if needed > 0 and cluster_gpus < needed:
        raise GpuUnavailable(
            f"{req.asked}{f' ({req.count} workers)' if req.count > 1 else ''} but the Ray cluster offers "
            f"{cluster_gpus:g} GPU(s): run it on GPU nodes (the RayJob's gpu-workers group) or set "
            f"{req.setting}: 0")


# KubeRay submits the job once the RayCluster is Ready, yet a GPU worker's raylet may register with the head a
# little later: wait this long for the GPUs to appear before calling them missing.
GPU_NODES_WAIT_S = 60.0
GPU_NODES_POLL_S = 2.0


def check_ray_cluster(req: GpuRequest, wait_s: float | None = None) -> None:
    if req.gpus <= 0:
        return
    import ray

    deadline = time.monotonic() + (GPU_NODES_WAIT_S if wait_s is None else wait_s)
    while True:
        offered = float(ray.cluster_resources().get("GPU", 0.0))
        if offered >= req.gpus * req.count or time.monotonic() >= deadline:
            break
        time.sleep(GPU_NODES_POLL_S)
    check_cluster(req, offered)


def require_cuda(req: GpuRequest) -> None:
    """In the worker or trial process: torch must see a CUDA device for every GPU it holds."""
    if req.gpus <= 0:
        return
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found >= req.devices:
        return
    if torch.version.cuda is None:
        where = f"CUDA is not available in this image/node (torch {torch.__version__} built without CUDA)"
    else:
        where = (f"this {req.per} sees {found} CUDA device(s) (torch {torch.__version__}, CUDA "
                 f"{torch.version.cuda}: no driver or no GPU on this node?)")
    raise GpuUnavailable(f"{req.asked} but {where}: use the -cuda image or set {req.setting}: 0")


def guarded(function: Callable[..., Any], req: GpuRequest) -> Callable[..., Any]:
    """`function` (a train loop or Tune trainable) checking CUDA first; its signature, as Ray inspects it, unchanged."""
    if req.gpus <= 0:
        return function

    @functools.wraps(function)
    def run_on_gpu(*args: Any, **kwargs: Any) -> Any:
        require_cuda(req)
        return function(*args, **kwargs)

    return run_on_gpu


def raised_in(error: BaseException | None) -> GpuUnavailable | None:
    """The GpuUnavailable a worker raised, inside what Ray wraps it in (RayTaskError, WorkerGroupError)."""
    return next((err for err in _chain(error, set()) if isinstance(err, GpuUnavailable)), None)


def _chain(error: BaseException | None, seen: set[int]) -> Iterator[BaseException]:
    if error is None or id(error) in seen:
        return
    seen.add(id(error))
    yield error
    nested: list[Any] = [getattr(error, "cause", None), getattr(error, "controller_failure", None),
                         *(getattr(error, "worker_failures", None) or {}).values(), error.__cause__, error.__context__]
    for inner in nested:
        if isinstance(inner, BaseException):
            yield from _chain(inner, seen)
