"""Find installed workloads through the `ferry.workloads` entry point group."""

from __future__ import annotations

from importlib.metadata import entry_points

from ferry.contract.errors import FerryError
from ferry.spec.checks import WorkloadFacts
from ferry.spec.workload import ENTRY_POINT_GROUP, Workload


class WorkloadNotFound(FerryError):
    """A spec names a workload that is not installed, or whose entry point is not a ferry Workload."""


def available() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_workload(name: str) -> Workload:
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none (is ferry installed with `pip install -e .`?)"
        raise WorkloadNotFound(f"no workload {name!r} is installed; installed: {known}. Fix spec.workload, or "
                               "install the package that provides it")
    factory = eps[name].load()
    workload = factory()
    if not isinstance(workload, Workload):
        raise WorkloadNotFound(f"entry point {name!r} (group {ENTRY_POINT_GROUP}) does not provide the ferry "
                               "Workload protocol: its factory must return an object with every Workload method")
    return workload


def workload_facts() -> dict[str, WorkloadFacts]:
    """Facts of every installed workload; one that fails to load is simply absent (and reported as unknown)."""
    facts: dict[str, WorkloadFacts] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            facts[ep.name] = ep.load().facts
        except Exception:  # noqa: S112 - a broken plugin must not break validation of others
            continue
    return facts
