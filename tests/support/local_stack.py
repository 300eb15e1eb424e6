"""What the integration tests' module fixtures share around a local service stack: polling for a value,
stopping Ray (driver and head), MLflow and the rest, and giving the process its environment back
(`use_ray_client_env` and the Ray client change it)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ferry.local.supervisor.service_defs import ray_temp_dir
from ferry.local.supervisor.services import stop_services
from ferry.settings import Settings


def wait_for_value(probe: Callable[[], Any], timeout_s: float, every_s: float = 0.25) -> Any:
    """The first truthy value `probe()` returns within `timeout_s`, else None (bounded polling)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every_s)
    return None


def stop_stack(settings: Settings) -> None:
    """Disconnect this process from Ray, stop every service of `settings`, and drop Ray's temp dir."""
    import ray

    ray.shutdown()
    stop_services(settings)
    shutil.rmtree(ray_temp_dir(settings), ignore_errors=True)


@contextmanager
def restored_environ() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def stopping(settings: Settings) -> Iterator[None]:
    """`stop_stack(settings)` when the block ends, however it ends."""
    try:
        yield
    finally:
        stop_stack(settings)
