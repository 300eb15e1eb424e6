"""Reliability scenarios run short in CI and at full length under `task reliability`.

RELIABILITY_MODE=full (set by benchmarks/reliability/run.py) selects the full bounds; RELIABILITY_OUT names
a JSON-lines file each scenario appends its measured figures to, which run.py turns into docs/reliability.md.
(Not FERRY_*: tests/conftest.py clears those so a developer's settings never leak into tests.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FULL = os.environ.get("RELIABILITY_MODE") == "full"
Record = Callable[..., None]


def scaled(ci: float, full: float) -> float:
    return full if FULL else ci


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Record:
    """record(scenario, bound=..., **figures): keep a scenario's figures for docs/reliability.md."""

    def write(scenario: str, bound: str, **figures: Any) -> None:
        entry = {"scenario": scenario, "bound": bound, "mode": "full" if FULL else "ci",
                 "test": request.node.nodeid, **figures}
        print(json.dumps(entry, default=str))
        out = os.environ.get("RELIABILITY_OUT")
        if out:
            with Path(out).open("a") as handle:
                handle.write(json.dumps(entry, default=str) + "\n")

    return write
