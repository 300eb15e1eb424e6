"""Shared fixtures: the repository root and the example specs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.ports import range_for, xdist_worker

ROOT = Path(__file__).resolve().parents[1]

# Tests are hermetic: a developer's own MLflow, Ray or ferry settings must not leak into them.
for _name in [n for n in os.environ if n.startswith(("FERRY_", "RAY_ADDRESS", "MLFLOW_TRACKING_URI"))]:
    del os.environ[_name]
# Nor a terminal size: pytest-xdist's workers export COLUMNS=80, which rich reads once, when the CLI's console is
# made, so a test that passes COLUMNS to its invocation would print at 80 columns under `-n` and at its own alone.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)
MODELS = ROOT / "gitops" / "models"

# `pytest --hypothesis-profile=reliability` (task reliability): the fuzz tests run ten times the examples.
settings.register_profile("reliability", settings.get_profile("default"))


def pytest_configure(config: pytest.Config) -> None:
    """Free ports come from this run's share of the range when two runs go at once (TESTS_PORT_SHARE, set by
    tests/run_all.sh), and under xdist from this worker's slice of it (tests/support/ports.py)."""
    from ferry.local.supervisor import procs

    procs.FREE_PORT_RANGE = range_for(procs.FREE_PORT_RANGE, os.environ.get("TESTS_PORT_SHARE"), xdist_worker(config))


# The integration modules that take longest (each starts its own services), longest first. `task test` runs
# modules three at a time with `--dist loadfile --no-loadscope-reorder`, so they start in this order: xdist's
# default order, by number of tests, started the single-test closed loop (~9 min) last, and CI waited for it
# alone. xdist also hands a worker a second module while its first has at most two tests left: the fourth
# module here goes to the closed loop's worker at once, to run after it, so it is a quick one (pure tests).
# A module missing here only starts later; nothing else depends on the order.
SLOWEST_FIRST = ("integration/test_closed_loop_e2e.py", "integration/test_pipeline.py",
                 "integration/test_retrain_e2e.py", "reliability/test_loadgen.py", "integration/test_canary.py",
                 "integration/test_alerts_e2e.py", "integration/test_serving.py", "integration/test_drift_e2e.py",
                 "reliability/test_serving_reliability.py", "integration/test_monitoring_live.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules in SLOWEST_FIRST go first, in its order; every module keeps its own tests' order."""
    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next((i for i, name in enumerate(SLOWEST_FIRST) if path.endswith(f"tests/{name}")), len(SLOWEST_FIRST))

    items.sort(key=rank)  # stable: the rest keep pytest's order


@pytest.fixture(autouse=True)
def _forget_mlflow_tracking_uri() -> Iterator[None]:
    """A test that points MLflow's process-wide tracking URI at its own server (`mlflow.set_tracking_uri`)
    must not leak it: that server is gone by the next test, and the global wins over MLFLOW_TRACKING_URI."""
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)  # unsets the global and the MLFLOW_TRACKING_URI it exported


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def example_text() -> str:
    return (MODELS / "fraud-detector.yaml").read_text()
