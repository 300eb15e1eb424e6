"""Each pytest-xdist worker picks free ports from a slice of its own: workers start their services at the same
time, and two of them choosing the same free port in the seconds before either binds it failed a CI run once
(MLflow of the closed loop: address already in use)."""

from __future__ import annotations


def worker_slice(ports: tuple[int, int], index: int, count: int) -> tuple[int, int]:
    """Worker `index` of `count`'s share of the inclusive range `ports`."""
    low, high = ports
    size = (high - low + 1) // max(1, count)
    return low + index * size, low + (index + 1) * size - 1
