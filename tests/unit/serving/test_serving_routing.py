"""The sticky champion/challenger split: deterministic, proportional, monotonic in the weight."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from ferry.adapters.registry import parse_weight
from ferry.serving.routing import BUCKETS, CHALLENGER, CHAMPION, bucket, choose, choose_many

KEYS = range(10_000)


def test_bucket_is_stable_across_processes() -> None:
    # Pinned values: a change of hash would move customers between models mid-rollout.
    assert [bucket(k) for k in (0, 1, 42, "abc", 123456789)] == [89, 10, 38, 21, 37]
    code = "from ferry.serving.routing import bucket; print([bucket(k) for k in range(50)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PYTHONPATH": ":".join(sys.path)})
    assert other.stdout.strip() == str([bucket(k) for k in range(50)])


def test_int_and_str_keys_agree() -> None:
    assert all(bucket(k) == bucket(str(k)) for k in range(100))
    assert all(0 <= bucket(k) < BUCKETS for k in KEYS)


@pytest.mark.parametrize("weight", [1, 10, 25, 50, 75, 99])
def test_share_follows_weight(weight: int) -> None:
    share = sum(choose(k, weight) == CHALLENGER for k in KEYS) / len(KEYS)
    assert abs(share - weight / 100) < 0.02, share


def test_weight_zero_never_and_hundred_always() -> None:
    assert all(choose(k, 0) == CHAMPION for k in KEYS)
    assert all(choose(k, 100) == CHALLENGER for k in KEYS)
    assert all(choose(k, 100, has_challenger=False) == CHAMPION for k in range(1000))
    assert choose(5, -3) == CHAMPION and choose(5, 250) == CHALLENGER


def test_same_key_same_variant() -> None:
    assert all(choose(k, 37) == choose(k, 37) for k in range(2000))


def test_raising_the_weight_only_moves_keys_to_the_challenger() -> None:
    steps = [10, 25, 50, 100]
    for low, high in itertools.pairwise(steps):
        assert all(choose(k, high) == CHALLENGER for k in KEYS if choose(k, low) == CHALLENGER)


def test_keyless_requests_split_in_proportion() -> None:
    share = sum(choose(None, 30) == CHALLENGER for _ in range(10_000)) / 10_000
    assert abs(share - 0.30) < 0.03


@pytest.mark.parametrize(("raw", "expected"), [
    (None, 0), ("", 0), ("abc", 0), ("nan", 0), ("25", 25), ("25.9", 25), ("-5", 0), ("150", 100), (50, 50)])
def test_weight_tag_parsing(raw: object, expected: int) -> None:
    assert parse_weight(raw) == expected


@pytest.mark.parametrize("weight", [0, 1, 37, 50, 99, 100])
def test_choose_many_agrees_with_choose(weight: int) -> None:
    keys = list(KEYS)
    assert choose_many(keys, len(keys), weight) == [choose(k, weight) for k in keys]
    assert choose_many(keys, len(keys), weight, has_challenger=False) == [CHAMPION] * len(keys)
    assert len(choose_many(None, 7, weight)) == 7
