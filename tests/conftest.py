"""Shared fixtures: the repository root and the example specs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]

# Tests are hermetic: a developer's own MLflow, Ray or ferry settings must not leak into them.
for _name in [n for n in os.environ if n.startswith(("FERRY_", "RAY_ADDRESS", "MLFLOW_TRACKING_URI"))]:
    del os.environ[_name]
MODELS = ROOT / "gitops" / "models"

# `pytest --hypothesis-profile=reliability` (task reliability): the fuzz tests run ten times the examples.
settings.register_profile("reliability", settings.get_profile("default"))


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
