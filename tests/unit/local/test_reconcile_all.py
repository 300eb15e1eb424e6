"""`ferry up` runs every model's Workflow at once (as Argo runs the Workflows of one sync) and deploys each model as
soon as its own run is over; the first error stops the other runs. Each model's router starts with its run (as
Argo CD applies a RayService beside the Workflow) and is withdrawn when the run leaves the model no champion."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from ferry.contract import names
from ferry.local import reconcile
from ferry.local.errors import LocalError
from ferry.settings import Settings

SPECS: Any = [SimpleNamespace(name=name) for name in ("alpha", "beta", "gamma")]


def outcome(name: str) -> reconcile.ModelOutcome:
    return reconcile.ModelOutcome(name, "0123456789", "ran", f"{name}-0123456789", "Succeeded")


def test_the_models_run_at_once_and_each_deploys_when_its_own_run_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    together = threading.Barrier(len(SPECS), timeout=10)  # broken (an error) unless all three runs overlap
    slow_run_over, others_served = threading.Event(), threading.Event()
    deployed_while_gamma_ran: list[str] = []

    def run(settings: Any, registry: Any, spec: Any, on_update: Any, on_wait: Any, stop: Any,
            on_run: Any = None) -> Any:
        together.wait()
        if spec.name == "gamma":  # the slow one: it ends once the others are served, or after 30 s if they wait
            others_served.wait(30)  # for it (not a fixed sleep, which a stalled second on a loaded machine beats)
            slow_run_over.set()
        return outcome(spec.name)

    def serve(settings: Any, registry: Any, spec: Any, deploy: Any, on_wait: Any, withdraw: Any, stop: Any) -> Any:
        if not slow_run_over.is_set():
            deployed_while_gamma_ran.append(spec.name)
            if len(deployed_while_gamma_ran) == 2:
                others_served.set()
        return reconcile.Served(spec.name, f"http://127.0.0.1:1/{spec.name}")

    monkeypatch.setattr(reconcile, "reconcile_model", run)
    monkeypatch.setattr(reconcile, "_serve", serve)
    done = reconcile._reconcile_all(Any, Any, SPECS, reconcile._Hooks(None, None, lambda spec: None))
    assert [result.model for result, _ in done] == ["alpha", "beta", "gamma"]  # in the specs' order
    assert [served.model for _, served in done if served] == ["alpha", "beta", "gamma"]
    assert sorted(deployed_while_gamma_ran) == ["alpha", "beta"]


def test_the_first_error_stops_the_other_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[bool] = []

    def run(settings: Any, registry: Any, spec: Any, on_update: Any, on_wait: Any, stop: Any,
            on_run: Any = None) -> Any:
        if spec.name == "gamma":
            raise LocalError("the lock on model gamma is held")
        stopped.append(stop.wait(10))  # a run that was not stopped would go on for its whole Workflow
        return outcome(spec.name)

    monkeypatch.setattr(reconcile, "reconcile_model", run)
    began = time.monotonic()
    with pytest.raises(LocalError, match="the lock on model gamma is held"):
        reconcile._reconcile_all(Any, Any, SPECS, reconcile._Hooks(None, None, None))
    assert stopped == [True, True] and time.monotonic() - began < 5


class Champions:
    """The registry's champion aliases, as `_serve` reads them."""

    def __init__(self, *models: str) -> None:
        self.models = set(models)

    def alias(self, model: str, alias: str) -> str | None:
        return "1" if alias == names.ALIAS_CHAMPION and model in self.models else None


def test_each_router_starts_with_its_run_and_is_withdrawn_when_the_run_leaves_no_champion(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runs_over: set[str] = set()
    started: dict[str, bool] = {}  # model: whether its run was over when its router started
    router_up = {spec.name: threading.Event() for spec in SPECS}
    withdrawn: list[str] = []
    deployed: list[str] = []

    def run(settings: Any, registry: Any, spec: Any, on_update: Any, on_wait: Any, stop: Any,
            on_run: Any = None) -> Any:
        on_run()  # the run starts
        # Training, until its router has started (at most 30 s: a router that waits for the run starts after it);
        # not a fixed sleep, which a router thread stalled on a loaded machine would outlast.
        router_up[spec.name].wait(30)
        runs_over.add(spec.name)
        return outcome(spec.name)

    def start_serving(spec: Any) -> Any:
        started[spec.name] = spec.name in runs_over
        router_up[spec.name].set()
        return None if spec.name == "gamma" else (lambda: withdrawn.append(spec.name))  # gamma: served already

    def deploy(spec: Any) -> Any:
        deployed.append(spec.name)
        return reconcile.Served(spec.name, f"http://127.0.0.1:1/{spec.name}")

    monkeypatch.setattr(reconcile, "reconcile_model", run)
    hooks = reconcile._Hooks(None, None, deploy, start_serving)
    done = reconcile._reconcile_all(Settings(home=tmp_path), Champions("alpha", "gamma"), SPECS, hooks)
    assert started == {"alpha": False, "beta": False, "gamma": False}
    assert sorted(deployed) == ["alpha", "gamma"] and withdrawn == ["beta"]  # beta's run registered no champion
    assert [served.model for _, served in done if served] == ["alpha", "gamma"]


def test_no_router_starts_without_serving(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    monkeypatch.setattr(reconcile, "reconcile_model", lambda *args, on_run: (on_run(), outcome(args[2].name))[1])
    hooks = reconcile._Hooks(None, None, None, lambda spec: started.append(spec.name))
    done = reconcile._reconcile_all(Settings(home=tmp_path), Champions(), SPECS, hooks)
    assert started == [] and all(served is None for _, served in done)


def test_a_run_that_raises_withdraws_the_router_it_started(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    withdrawn: list[str] = []

    def run(settings: Any, registry: Any, spec: Any, on_update: Any, on_wait: Any, stop: Any,
            on_run: Any = None) -> Any:
        on_run()
        if spec.name == "gamma":
            raise LocalError("the Workflow of model gamma is broken")
        stop.wait(10)
        return outcome(spec.name)

    monkeypatch.setattr(reconcile, "reconcile_model", run)
    hooks = reconcile._Hooks(None, None, lambda spec: None, lambda spec: lambda: withdrawn.append(spec.name))
    with pytest.raises(LocalError, match="gamma"):
        reconcile._reconcile_all(Settings(home=tmp_path), Champions("alpha"), SPECS, hooks)
    assert sorted(withdrawn) == ["beta", "gamma"]  # alpha has a champion to serve; beta was stopped


class Versions(Champions):
    """A registry where `hashed` models have a version with the spec's hash already."""

    def __init__(self, *hashed: str) -> None:
        super().__init__()
        self.hashed = set(hashed)

    def versions_with_hash(self, model: str, digest: str) -> list[str]:
        return ["1"] if model in self.hashed else []


def test_a_router_starts_only_for_a_model_that_runs(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the model's lock, as the run starts: a second `ferry up` waiting on that lock finds the version and
    starts nothing, and an up-to-date model is served by the deploy after the check."""
    monkeypatch.setattr(reconcile, "_run", lambda *args: outcome(args[1].name))
    calls: list[str] = []
    spec: Any = SimpleNamespace(name="alpha", model=SimpleNamespace())
    monkeypatch.setattr(reconcile, "spec_hash", lambda model: "0123456789")
    reconcile.reconcile_model(Settings(home=tmp_path), Versions(), spec, on_run=lambda: calls.append("ran"))
    up_to_date = reconcile.reconcile_model(Settings(home=tmp_path), Versions("alpha"), spec,
                                           on_run=lambda: calls.append("up-to-date"))
    assert calls == ["ran"] and up_to_date.action == "up-to-date"
