"""The in-memory registry: the shared contract (tests/support/registry_contract.py, also run against MLflow
in tests/integration/test_registry_contract.py), plus what only it has: programs, simulated outages, a clock."""

from __future__ import annotations

import pytest
from tests.support.registry_contract import RegistryContract, registered

from ferry.adapters.registry_memory import MemoryRegistry
from ferry.adapters.registry_port import NotFound, NotServable, RegistryUnavailable, parse_weight
from ferry.contract import names


class TestMemoryRegistry(RegistryContract):
    @pytest.fixture
    def registry(self) -> MemoryRegistry:
        return MemoryRegistry()

    @pytest.fixture
    def down(self) -> MemoryRegistry:
        return MemoryRegistry(faults=lambda operation: True)

    @pytest.fixture
    def run_id(self) -> str:
        return "0123456789abcdef"


def test_a_program_is_what_loads_and_anything_else_is_not_servable() -> None:
    registry = MemoryRegistry()
    registry.ensure_registered_model("m", "o")
    program = object()
    served = registry.register_version("m", "s3://x", program=program).version
    pickled = registry.register_version("m", "s3://y").version
    assert registry.load_pytorch_version("m", served) is program
    with pytest.raises(NotServable, match=r"m version 2 is not a torch\.export"):
        registry.load_pytorch_version("m", pickled)
    with pytest.raises(NotFound):
        registry.load_pytorch_version("m", "3")


def test_faults_fail_the_named_operations_only() -> None:
    registry = MemoryRegistry()
    registered(registry, "m", 2)
    registry.faults = lambda operation: operation == "delete_alias"
    registry.set_alias("m", names.ALIAS_CHALLENGER, "2")
    with pytest.raises(RegistryUnavailable, match="simulated outage during delete_alias"):
        registry.delete_alias("m", names.ALIAS_CHALLENGER)
    registry.faults = lambda operation: False
    registry.delete_alias("m", names.ALIAS_CHALLENGER)
    assert registry.aliases("m") == {}


def test_creation_times_come_from_its_clock() -> None:
    registry = MemoryRegistry(now=lambda: 1234.5)
    registry.ensure_registered_model("m", "o")
    assert registry.register_version("m", "s3://x").created_at_s == 1234.5


def test_a_version_read_is_a_copy_of_the_store() -> None:
    registry = MemoryRegistry()
    (version,) = registered(registry, "m", 1, a="1")
    found = registry.version("m", version)
    found.tags["a"] = "changed"  # type: ignore[index]
    assert registry.version("m", version).tags["a"] == "1"


@pytest.mark.parametrize(("raw", "weight"), [(None, 0), ("", 0), ("10", 10), ("10.9", 10), (1e9, 100),
                                             ("-inf", 0), ("inf", 100), ("nan", 0)])
def test_weight_tags_parse_to_a_share_of_traffic(raw: object, weight: int) -> None:
    assert parse_weight(raw) == weight
