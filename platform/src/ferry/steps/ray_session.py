"""Connecting a step to Ray: inside a RayJob the driver joins its cluster; elsewhere RAY_ADDRESS says where."""

from __future__ import annotations

import os
from pathlib import Path

from ferry.settings import Settings


def connect(settings: Settings) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or settings.ray_address
    extra: dict[str, object] = {}
    if address.startswith(("127.", "localhost")):
        # With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 from the parent's environment (ferry_env), this keeps
        # the driver on loopback instead of the host's address.
        extra["_node_ip_address"] = "127.0.0.1"
    ray.init(address=address, log_to_driver=True, logging_level="WARNING", **extra)  # type: ignore[arg-type]


def storage_path(settings: Settings) -> str:
    """Where Tune and Train keep results and checkpoints; a shared URI (FERRY_RAY_STORAGE) on a cluster."""
    shared = os.environ.get("FERRY_RAY_STORAGE")
    if shared:
        return shared
    path = Path(settings.state_dir) / "ray_results"
    path.mkdir(parents=True, exist_ok=True)
    return str(path.resolve())
