"""What the integration tests' module fixtures share around a local service stack: polling for a value, a spec
under a module's own name, stopping Ray (driver and head), MLflow and the rest, and giving the process its
environment back (`use_ray_client_env` and the Ray client change it)."""

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
from ferry.spec.models import ModelSpec


def wait_for_value(probe: Callable[[], Any], timeout_s: float, every_s: float = 0.25) -> Any:
    """The first truthy value `probe()` returns within `timeout_s`, else None (bounded polling)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every_s)
    return None


def serve_errors(settings: Settings, limit_chars: int = 4000) -> str:
    """The error records (and their tracebacks) of the Serve replicas' logs of `settings`' Ray session: what a
    failed assertion about a 5xx should show, since the session's logs go with the stack when it stops."""
    found: list[str] = []
    for log in sorted((ray_temp_dir(settings) / "session_latest" / "logs" / "serve").glob("replica_*.log")):
        keep = False
        for line in log.read_text(errors="replace").splitlines():
            level, _, rest = line.partition(" ")
            if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") and rest[:2] == "20":  # a new record
                keep = level in ("ERROR", "CRITICAL")
            if keep:
                found.append(f"{log.name}: {line}")
    return "\n".join(found)[-limit_chars:] or "(no error in the Serve replicas' logs)"


def renamed(model: ModelSpec, name: str) -> ModelSpec:
    """`model` under a name of its own: the modules that share their test process' MLflow server
    (tests/integration/conftest.py `mlflow_uri`) each register their own name, so that one module's versions,
    aliases and tags are never another's."""
    return model.model_copy(update={"metadata": model.metadata.model_copy(update={"name": name})})


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
