"""Durations as Go, Argo and Prometheus write them ('500ms', '30s', '5m', '1h30m'): one parser for the
spec's fields, the rollout controller's intervals and the local runner's retry backoffs."""

from __future__ import annotations

import re

UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration_s(text: str) -> float:
    """'10s', '5m', '1h30m', '500ms', '1.5h' in seconds; ValueError naming the text otherwise."""
    stripped = text.strip()
    parts = _PART.findall(stripped)
    if not parts or "".join(number + unit for number, unit in parts) != stripped:
        raise ValueError(f"invalid duration {text!r} (expected e.g. 500ms, 30s, 5m, 1h30m)")
    return sum(float(number) * UNITS_S[unit] for number, unit in parts)
