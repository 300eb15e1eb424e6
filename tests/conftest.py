"""Shared fixtures: the repository root and the example specs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "gitops" / "models"


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def example_text() -> str:
    return (MODELS / "fraud-detector.yaml").read_text()
