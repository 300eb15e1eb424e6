"""Shared fixtures (the repository root, the example specs) and the hooks every test process runs: its free ports, the
integration modules' order, and the timeline that TESTS_TIMELINE asks for (tests/support/timeline.py)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support import timeline
from tests.support.ports import range_for, xdist_worker
from tests.support.timeline import pytest_runtest_logreport  # noqa: F401 (a hook: TESTS_TIMELINE)

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
    timeline.start(config)


# The integration modules that take longest (each starts its own services), longest first. `task test` runs
# modules three at a time with `--dist loadfile --no-loadscope-reorder`, so they start in this order: xdist's
# default order, by number of tests, started the single-test closed loop (~9 min) last, and CI waited for it
# alone. A module missing here only starts later; nothing else depends on the order.
SLOWEST_FIRST = ("integration/test_closed_loop_e2e.py", "integration/test_pipeline.py",
                 "integration/test_retrain_e2e.py", "integration/test_canary.py", "integration/test_alerts_e2e.py",
                 "integration/test_serving.py", "integration/test_drift_e2e.py",
                 "reliability/test_serving_reliability.py", "integration/test_monitoring_live.py")
# xdist hands a worker its next module while its current one has at most two tests left (a worker runs a test
# only once it knows the next one, for the fixtures' teardown): a first module of one or two tests, the closed
# loop, gets a second one as soon as the first modules are handed out, and that one waits behind it for its whole
# run. So right after the first modules come quick modules of at least three tests (pure tests), one for each
# such short first module; a CI run that queued the canary module there waited ~2.5 min longer for it.
QUICK = ("reliability/test_loadgen.py", "reliability/test_data_paths.py")


def module_order(workers: int, tests_in: dict[str, int]) -> list[str]:
    """SLOWEST_FIRST for `workers` workers: after the first `workers` modules, as many QUICK ones as those first
    modules have members of at most two tests (`tests_in`: a module's collected tests)."""
    first, rest = list(SLOWEST_FIRST[:workers]), list(SLOWEST_FIRST[workers:])
    short = sum(1 for name in first if 0 < tests_in.get(name, 0) <= 2)
    return first + list(QUICK[:short]) + rest


def _module(item: pytest.Item) -> str:
    return "/".join(item.path.parts[-2:])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules in the order module_order gives go first; every module keeps its own tests' order."""
    worker = xdist_worker(config)
    order = module_order(worker[1] if worker else 1, Counter(_module(item) for item in items))

    def rank(item: pytest.Item) -> int:
        name = _module(item)
        return order.index(name) if name in order else len(order)

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
