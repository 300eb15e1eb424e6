"""Each pytest-xdist worker picks free ports from a slice of its own: workers start their services at the same
time, and two of them choosing the same free port in the seconds before either binds it failed a CI run once
(MLflow of the closed loop: address already in use)."""

from __future__ import annotations

from typing import Any


def worker_slice(ports: tuple[int, int], index: int, count: int) -> tuple[int, int]:
    """Worker `index` of `count`'s share of the inclusive range `ports`."""
    low, high = ports
    size = (high - low + 1) // max(1, count)
    return low + index * size, low + (index + 1) * size - 1


def range_for(ports: tuple[int, int], share: str | None, worker: tuple[int, int] | None) -> tuple[int, int]:
    """The range a test process picks from: its run's `share` (`k/n`: two runs at once, tests/run_all.sh), then
    its xdist worker's slice of that (`worker`: index and count)."""
    if share:
        index, count = share.split("/")
        ports = worker_slice(ports, int(index), int(count))
    return worker_slice(ports, *worker) if worker is not None else ports


def xdist_worker(config: Any) -> tuple[int, int] | None:
    """A pytest process' index and the worker count under pytest-xdist, else None."""
    worker = getattr(config, "workerinput", None)
    return None if worker is None else (int(worker["workerid"].removeprefix("gw")), int(worker["workercount"]))
