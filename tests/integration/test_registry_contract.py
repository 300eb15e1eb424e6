"""The registry contract (tests/support/registry_contract.py) against MLflow's implementation and a real
MLflow server (sqlite) on a free loopback port (the session's, tests/integration/conftest.py): the in-memory
registry the unit tests use must behave like this. A second client points at a closed port for the outage cases."""

from __future__ import annotations

import pytest
from tests.support.registry_contract import RegistryContract, registered

from ferry.adapters.registry import Registry
from ferry.adapters.registry_port import NotFound
from ferry.local.supervisor import procs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class TestMlflowRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, mlflow_uri: str) -> Registry:
        return Registry(mlflow_uri)

    @pytest.fixture
    def down(self, monkeypatch: pytest.MonkeyPatch) -> Registry:
        # one try, no backoff: MLflow's client would otherwise retry each call for minutes
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        return Registry(f"http://127.0.0.1:{procs.free_port()}")

    @pytest.fixture
    def run_id(self, registry: Registry, model: str) -> str:
        return str(registry.client.create_run(registry.experiment_id(model)).info.run_id)


def test_versions_keep_the_run_that_logged_them(mlflow_uri: str) -> None:
    registry = Registry(mlflow_uri)
    registry.ensure_registered_model("with-run", "contract")
    run = registry.client.create_run(registry.experiment_id("with-run")).info.run_id
    created = registry.register_version("with-run", f"runs:/{run}/model", run_id=run)
    assert registry.version("with-run", created.version).run_id == run


def test_a_version_that_is_no_program_is_not_found_before_anything_is_loaded(mlflow_uri: str) -> None:
    registry = Registry(mlflow_uri)
    registered(registry, "not-a-program")
    with pytest.raises(NotFound):
        registry.load_pytorch_version("not-a-program", "7")
