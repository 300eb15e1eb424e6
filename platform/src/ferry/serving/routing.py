"""Sticky traffic split between champion and challenger: pure functions, no Ray, no I/O.

A key (the workload's routing key, e.g. a card id) lands in one of 100 buckets by a stable hash, and
buckets below the challenger's weight go to the challenger. Every replica, on every node and after every
restart, must send the same customer to the same model, or a customer would see two models' decisions
during a canary, so the hash is never Python's `hash()` (salted per process):

- an integer key (the usual case: card and customer ids) is mixed as splitmix64 mixes its state, which
  numpy computes for a whole batch at once (a 256-row batch spent ~0.25 ms on per-row blake2b);
- any other key is hashed as the UTF-8 of `str(key)` with blake2b.

Raising the weight from 10 to 25 keeps buckets 0-9 on the challenger and adds 10-24, so customers only
ever move champion → challenger as a rollout advances.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal

import numpy as np

Variant = Literal["champion", "challenger"]
CHAMPION: Variant = "champion"
CHALLENGER: Variant = "challenger"
BUCKETS = 100
_MASK = (1 << 64) - 1
_INT64 = (-(1 << 63), 1 << 63)


_GAMMA = 0x9E3779B97F4A7C15


def _mix(x: int) -> int:
    """splitmix64's output for state `x` (its increment, then its finaliser; Python ints wrapped to 64 bits)."""
    x = (x + _GAMMA) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _mix_array(x: np.ndarray) -> np.ndarray:
    """`_mix` for a uint64 array (numpy's uint64 arithmetic wraps, as the masks do above)."""
    x = x + np.uint64(_GAMMA)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _is_int64(key: object) -> bool:
    return type(key) is int and _INT64[0] <= key < _INT64[1]  # bool is not a key; huge ints hash as text


def bucket(key: object) -> int:
    """The key's bucket in [0, 100): the same for the same key in every process."""
    if _is_int64(key):
        assert isinstance(key, int)
        return _mix(key & _MASK) % BUCKETS
    digest = hashlib.blake2b(str(key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def buckets(keys: Sequence[object] | np.ndarray) -> np.ndarray:
    """`bucket` of every key, vectorised when all keys are 64-bit integers (an int64 array needs no check)."""
    if isinstance(keys, np.ndarray) and keys.dtype == np.int64:
        return (_mix_array(keys.view(np.uint64)) % np.uint64(BUCKETS)).astype(np.int64)
    keys = keys.tolist() if isinstance(keys, np.ndarray) else keys
    if len(keys) and all(_is_int64(k) for k in keys):
        as_uint = np.asarray(keys, dtype=np.int64).view(np.uint64)  # two's complement, as `key & _MASK`
        return (_mix_array(as_uint) % np.uint64(BUCKETS)).astype(np.int64)
    return np.fromiter((bucket(k) for k in keys), dtype=np.int64, count=len(keys))


def choose(key: object | None, weight: int, has_challenger: bool = True) -> Variant:
    """Which variant serves this key. Weight 0 (or no challenger) never, 100 always picks the challenger.

    A request without a key cannot be sticky; it is split at random in the same proportion.
    """
    if not has_challenger or weight <= 0:
        return CHAMPION
    if weight >= BUCKETS:
        return CHALLENGER
    slot = random.randrange(BUCKETS) if key is None else bucket(key)  # noqa: S311 - not security-relevant
    return CHALLENGER if slot < weight else CHAMPION


Keys = Sequence[object] | np.ndarray


def challenger_rows(keys: Keys | None, rows: int, weight: int, has_challenger: bool = True) -> np.ndarray:
    """For a batch (keys None: no routing key), a bool per row: True where `choose` picks the challenger.
    Without a canary nothing is hashed."""
    if not has_challenger or weight <= 0:
        return np.zeros(rows, dtype=bool)
    if weight >= BUCKETS:
        return np.ones(rows, dtype=bool)
    if keys is None:
        return np.array([choose(None, weight) == CHALLENGER for _ in range(rows)], dtype=bool)
    if rows == 1:  # a single request: one scalar hash is cheaper than a dozen numpy calls on one element
        return np.array([bucket(keys[0].item() if isinstance(keys, np.ndarray) else keys[0]) < weight])
    return buckets(keys) < weight


def choose_many(keys: Keys | None, rows: int, weight: int, has_challenger: bool = True) -> list[Variant]:
    """`choose` for a batch, as variant names."""
    return [CHALLENGER if c else CHAMPION for c in challenger_rows(keys, rows, weight, has_challenger).tolist()]
