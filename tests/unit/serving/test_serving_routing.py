"""The sticky champion/challenger split: deterministic, proportional, monotonic in the weight."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from collections import Counter

import pytest

from ferry.adapters.registry_port import parse_weight
from ferry.serving.routing import BUCKETS, CHALLENGER, CHAMPION, bucket, buckets, challenger_rows, choose, choose_many

KEYS = range(10_000)


def test_bucket_is_stable_across_processes() -> None:
    # Pinned values: a change of hash would move customers between models mid-rollout.
    assert [bucket(k) for k in (0, 1, 42, "abc", 123456789)] == [35, 65, 13, 21, 97]
    code = "from ferry.serving.routing import bucket; print([bucket(k) for k in range(50)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PYTHONPATH": ":".join(sys.path)})
    assert other.stdout.strip() == str([bucket(k) for k in range(50)])


def test_batch_hash_agrees_with_the_single_key_hash() -> None:
    rng = random.Random(7)
    ints = [0, 1, -1, 42, -(2**63), 2**63 - 1, *(rng.randrange(-(2**63), 2**63) for _ in range(5000))]
    assert buckets(ints).tolist() == [bucket(k) for k in ints]
    mixed = [1, "1", 2**70, True, 3.5]  # not all 64-bit ints: each hashed on its own, as text
    assert buckets(mixed).tolist() == [bucket(k) for k in mixed]
    assert bucket(2**70) == bucket(str(2**70)) and bucket(True) == bucket("True")
    assert all(0 <= bucket(k) < BUCKETS for k in KEYS)


def test_sequential_ids_spread_evenly_over_buckets() -> None:
    counts = Counter(bucket(k) for k in range(100_000))
    assert len(counts) == BUCKETS and max(counts.values()) < 1150 and min(counts.values()) > 850


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
    assert challenger_rows(keys, len(keys), weight).tolist() == [choose(k, weight) == CHALLENGER for k in keys]


def test_an_int64_key_column_hashes_like_its_values() -> None:
    import numpy as np

    keys = [0, 7, -3, 2**40, 123456789]
    assert buckets(np.array(keys, dtype=np.int64)).tolist() == [bucket(k) for k in keys]
    assert buckets(np.array(["a", "b"])).tolist() == [bucket("a"), bucket("b")]
