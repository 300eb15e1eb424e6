"""The router's registry watcher: in-place swaps, last-known state when the registry is down."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator

import pytest
from tests.support.serving_fakes import publish, serving_registry, watcher_of

from ferry.adapters.registry_port import RolloutView
from ferry.serving.watcher import LOGGER_NAME, WAKE_GAP_S, RegistryWatcher


def versions(w: RegistryWatcher) -> tuple[str | None, str | None, int]:
    s = w.state
    return (s.champion.version if s.champion else None, s.challenger.version if s.challenger else None, s.weight)


def test_loads_champion_and_challenger_and_reuses_models_on_promotion() -> None:
    registry, loads = serving_registry(RolloutView("1", "2", 30)), []
    w = watcher_of(registry, loads=loads)
    assert w.refresh() and versions(w) == ("1", "2", 30)
    publish(registry, RolloutView("2", None, 0))  # promotion: the challenger becomes champion
    assert w.refresh() and versions(w) == ("2", None, 0)
    assert loads == ["1", "2"]  # nothing was loaded twice


def test_no_champion_means_not_ready() -> None:
    w = watcher_of(serving_registry())
    assert w.refresh() and w.state.champion is None and w.reachable


def test_challenger_equal_to_champion_gets_no_traffic() -> None:
    w = watcher_of(serving_registry(RolloutView("3", "3", 50)))
    w.refresh()
    assert versions(w) == ("3", None, 0)


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # Attached to the logger itself: once Ray Serve is imported, its logger no longer propagates to root.
    target = logging.getLogger(LOGGER_NAME)
    target.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        yield caplog
    target.removeHandler(caplog.handler)


def test_unreachable_registry_keeps_state_and_warns_once_per_outage(logged: pytest.LogCaptureFixture) -> None:
    registry = serving_registry(RolloutView("1", "2", 40))
    w = watcher_of(registry)
    w.refresh()
    registry.faults = lambda operation: True
    assert not w.refresh() and not w.refresh() and not w.refresh()
    assert versions(w) == ("1", "2", 40) and not w.reachable
    assert "RegistryUnavailable: the registry is unavailable" in (w.last_error or "")
    assert len({id(r) for r in logged.records if "unreachable" in r.message}) == 1  # a record may arrive twice
    registry.faults = lambda operation: False
    assert w.refresh()
    assert w.reachable and w.last_error is None and any("reachable again" in r.message for r in logged.records)


def test_unloadable_versions_keep_the_old_champion_and_give_no_traffic() -> None:
    registry = serving_registry(RolloutView("1", None, 0), broken={"4"}, versions=4)
    w = watcher_of(registry)
    w.refresh()
    registry.faults = lambda operation: operation == "load_pytorch_version"  # the download fails
    publish(registry, RolloutView("2", "3", 50))
    w.refresh()
    assert versions(w) == ("1", None, 0)
    registry.faults = lambda operation: False
    w.refresh()  # retried on the next poll
    assert versions(w) == ("2", "3", 50)
    publish(registry, RolloutView("2", "4", 50))  # not a pt2 program: refused, no traffic, no crash
    w.refresh()
    assert versions(w) == ("2", None, 0) and w.reachable


def test_background_polling_picks_up_weight_changes_and_stops() -> None:
    registry = serving_registry(RolloutView("1", "2", 10))
    w = watcher_of(registry, interval_s=0.05)
    w.refresh()
    w.start()
    try:
        publish(registry, RolloutView("1", "2", 60))
        deadline = time.monotonic() + 5
        while versions(w)[2] != 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert versions(w) == ("1", "2", 60)
    finally:
        w.stop()
    assert w._thread is not None and not w._thread.is_alive()


def test_a_wake_reads_the_registry_at_once_and_wakes_come_at_most_every_gap() -> None:
    registry = serving_registry()
    reads: list[float] = []
    w = RegistryWatcher("fraud-detector", lambda: (reads.append(time.monotonic()), registry.rollout_view(
        "fraud-detector"))[1], lambda version: registry.load_pytorch_version("fraud-detector", version), 3600)
    w.start()  # its next poll is an hour away
    try:
        publish(registry, RolloutView("1", None, 0))  # rollout sets the first champion
        w.wake()
        deadline = time.monotonic() + 5
        while w.state.champion is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert versions(w) == ("1", None, 0)
        began = time.monotonic()
        # A readiness probe asking as fast as it can, until two more reads (or 10 s: a starved machine may not
        # run the watcher's thread within a fixed second).
        while len(reads) < 3 and time.monotonic() < began + 10:
            w.wake()
            time.sleep(0.01)
        asked_s = time.monotonic() - began
        gaps = [b - a for a, b in itertools.pairwise(reads)]
        assert 2 <= len(gaps) <= asked_s / WAKE_GAP_S + 1 and min(gaps) >= WAKE_GAP_S - 0.01, (gaps, asked_s)
    finally:
        w.stop()
    assert w._thread is not None and not w._thread.is_alive()  # a stop wakes it too
