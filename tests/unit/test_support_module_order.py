"""The order `task test` hands integration modules to its xdist workers (tests/conftest.py): the slowest first, and
a quick module behind each first module too short to keep xdist from queueing a second one behind it at once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from tests.conftest import QUICK, SLOWEST_FIRST, module_order

TESTS = Path(__file__).resolve().parents[1]
COUNTS = {"integration/test_closed_loop_e2e.py": 1, "integration/test_pipeline.py": 11,
          "integration/test_retrain_e2e.py": 3, "integration/test_canary.py": 4, "integration/test_alerts_e2e.py": 2}


def test_the_quick_module_comes_right_after_the_first_ones_when_one_of_them_is_a_single_test() -> None:
    order = module_order(4, COUNTS)
    assert order[:4] == list(SLOWEST_FIRST[:4]) and order[4] == QUICK[0]
    assert order[5:] == list(SLOWEST_FIRST[4:])
    assert module_order(3, COUNTS)[3] == QUICK[0]


def test_each_short_first_module_gets_its_own_quick_one_and_long_ones_none() -> None:
    assert module_order(5, COUNTS)[5:7] == list(QUICK[:2])  # the closed loop and the two alert tests
    assert module_order(4, COUNTS | {"integration/test_closed_loop_e2e.py": 3}) == list(SLOWEST_FIRST)
    assert module_order(1, {}) == list(SLOWEST_FIRST)  # not collected here: nothing to wait behind


def _tests_in(module: Path) -> int:
    tree = ast.parse(module.read_text())
    return sum(isinstance(node, ast.FunctionDef) and node.name.startswith("test_") for node in ast.walk(tree))


@pytest.mark.parametrize("name", SLOWEST_FIRST + QUICK)
def test_every_named_module_exists(name: str) -> None:
    assert (TESTS / name).is_file(), name


@pytest.mark.parametrize("name", QUICK)
def test_a_quick_module_has_enough_tests_that_nothing_is_queued_behind_it(name: str) -> None:
    assert _tests_in(TESTS / name) >= 3, name
