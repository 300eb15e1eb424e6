"""The spec hash: one value per trained model, so a new hash means a new training run.

Only fields that change what is trained enter it (workload, data, training); a serving, rollout or
monitoring change re-renders and redeploys but keeps the hash, so it never retrains.
"""

from __future__ import annotations

import hashlib
import json

from ferry.spec.models import ModelSpec, training_view

HASH_LENGTH = 10


def canonical_json(value: object) -> str:
    """JSON with sorted keys and no whitespace: the same data always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_hash(model: ModelSpec) -> str:
    digest = hashlib.sha256(canonical_json(training_view(model)).encode()).hexdigest()
    return digest[:HASH_LENGTH]
