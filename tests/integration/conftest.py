"""Fixtures integration modules share: one MLflow server (sqlite) per test process, for the modules that can
share it (each registers model names of its own and none stops it); the modules that start their services name
it as their MLFLOW_TRACKING_URI, which `ferry up` then uses without starting another."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.local_stack import restored_environ

from ferry.local.supervisor import procs
from ferry.local.supervisor.services import start_services, stop_services
from ferry.settings import Settings


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (sqlite backend) on a free loopback port, started once per session."""
    settings = Settings(home=tmp_path_factory.mktemp("mlflow-home"), mlflow_port=procs.free_port(),
                        ready_timeout_s=90)
    with restored_environ():
        try:
            start_services(settings, include=["mlflow"])
            yield settings.mlflow_uri
        finally:
            stop_services(settings)
