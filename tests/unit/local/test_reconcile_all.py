"""`ferry up` runs every model's Workflow at once (as Argo runs the Workflows of one sync) and deploys each model as
soon as its own run is over; the first error stops the other runs."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from ferry.local import reconcile
from ferry.local.errors import LocalError

SPECS: Any = [SimpleNamespace(name=name) for name in ("alpha", "beta", "gamma")]


def outcome(name: str) -> reconcile.ModelOutcome:
    return reconcile.ModelOutcome(name, "0123456789", "ran", f"{name}-0123456789", "Succeeded")


def test_the_models_run_at_once_and_each_deploys_when_its_own_run_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    together = threading.Barrier(len(SPECS), timeout=10)  # broken (an error) unless all three runs overlap
    slow_run_over = threading.Event()
    deployed_while_gamma_ran: list[str] = []

    def run(settings: Any, registry: Any, spec: Any, on_update: Any, on_wait: Any, stop: Any) -> Any:
        together.wait()
        if spec.name == "gamma":  # the slow one: the others are served before it is over
            time.sleep(0.5)
            slow_run_over.set()
        return outcome(spec.name)

    def serve(settings: Any, registry: Any, spec: Any, deploy: Any, on_wait: Any) -> Any:
        if not slow_run_over.is_set():
            deployed_while_gamma_ran.append(spec.name)
        return reconcile.Served(spec.name, f"http://127.0.0.1:1/{spec.name}")

    monkeypatch.setattr(reconcile, "reconcile_model", run)
    monkeypatch.setattr(reconcile, "_serve", serve)
    done = reconcile._reconcile_all(Any, Any, SPECS, reconcile._Hooks(None, None, lambda spec: None))
    assert [result.model for result, _ in done] == ["alpha", "beta", "gamma"]  # in the specs' order
    assert [served.model for _, served in done if served] == ["alpha", "beta", "gamma"]
    assert sorted(deployed_while_gamma_ran) == ["alpha", "beta"]


def test_the_first_error_stops_the_other_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[bool] = []

    def run(settings: Any, registry: Any, spec: Any, on_update: Any, on_wait: Any, stop: Any) -> Any:
        if spec.name == "gamma":
            raise LocalError("the lock on model gamma is held")
        stopped.append(stop.wait(10))  # a run that was not stopped would go on for its whole Workflow
        return outcome(spec.name)

    monkeypatch.setattr(reconcile, "reconcile_model", run)
    began = time.monotonic()
    with pytest.raises(LocalError, match="the lock on model gamma is held"):
        reconcile._reconcile_all(Any, Any, SPECS, reconcile._Hooks(None, None, None))
    assert stopped == [True, True] and time.monotonic() - began < 5
