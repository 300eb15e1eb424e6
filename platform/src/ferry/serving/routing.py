"""Sticky traffic split between champion and challenger: pure functions, no Ray, no I/O.

A key (the workload's routing key, e.g. a card id) lands in one of 100 buckets by a stable hash, and
buckets below the challenger's weight go to the challenger. The hash is blake2b, not Python's `hash()`,
because that is salted per process: every replica, on every node and after every restart, must send
the same customer to the same model, or a customer would see two models' decisions during a canary.
Raising the weight from 10 to 25 keeps buckets 0-9 on the challenger and adds 10-24, so customers only
ever move champion → challenger as a rollout advances.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal

Variant = Literal["champion", "challenger"]
CHAMPION: Variant = "champion"
CHALLENGER: Variant = "challenger"
BUCKETS = 100


def bucket(key: object) -> int:
    """The key's bucket in [0, 100): the same for the same key in every process."""
    digest = hashlib.blake2b(str(key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


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


def choose_many(keys: Sequence[object] | None, rows: int, weight: int, has_challenger: bool = True) -> list[Variant]:
    """`choose` for a batch (keys None: no routing key). Without a canary nothing is hashed; with one the
    hash is inlined, since a 256-row batch otherwise spends more on calls than on blake2b."""
    if not has_challenger or weight <= 0:
        return [CHAMPION] * rows
    if weight >= BUCKETS:
        return [CHALLENGER] * rows
    if keys is None:
        return [choose(None, weight) for _ in range(rows)]
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    return [CHALLENGER if from_bytes(blake2b(str(k).encode("utf-8"), digest_size=8).digest(), "big") % BUCKETS
            < weight else CHAMPION for k in keys]
