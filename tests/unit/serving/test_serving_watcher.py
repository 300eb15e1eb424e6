"""The router's registry watcher: in-place swaps, last-known state when the registry is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from tests.support.serving_fakes import FakeRegistry

from ferry.adapters.registry import RolloutView
from ferry.serving.watcher import LOGGER_NAME, RegistryWatcher


def watcher(registry: FakeRegistry, interval_s: float = 3600) -> RegistryWatcher:
    return RegistryWatcher("m", registry.read, registry.load, interval_s)


def versions(w: RegistryWatcher) -> tuple[str | None, str | None, int]:
    s = w.state
    return (s.champion.version if s.champion else None, s.challenger.version if s.challenger else None, s.weight)


def test_loads_champion_and_challenger_and_reuses_models_on_promotion() -> None:
    registry = FakeRegistry(RolloutView("1", "2", 30))
    w = watcher(registry)
    assert w.refresh() and versions(w) == ("1", "2", 30)
    registry.view = RolloutView("2", None, 0)  # promotion: the challenger becomes champion
    assert w.refresh() and versions(w) == ("2", None, 0)
    assert registry.loads == ["1", "2"]  # nothing was loaded twice


def test_no_champion_means_not_ready() -> None:
    w = watcher(FakeRegistry())
    assert w.refresh() and w.state.champion is None and w.reachable


def test_challenger_equal_to_champion_gets_no_traffic() -> None:
    w = watcher(FakeRegistry(RolloutView("3", "3", 50)))
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
    registry = FakeRegistry(RolloutView("1", "2", 40))
    w = watcher(registry)
    w.refresh()
    registry.down = True
    assert not w.refresh() and not w.refresh() and not w.refresh()
    assert versions(w) == ("1", "2", 40) and not w.reachable and "registry down" in (w.last_error or "")
    assert len({id(r) for r in logged.records if "unreachable" in r.message}) == 1  # a record may arrive twice
    registry.down = False
    assert w.refresh()
    assert w.reachable and w.last_error is None and any("reachable again" in r.message for r in logged.records)


def test_unloadable_versions_keep_the_old_champion_and_give_no_traffic() -> None:
    registry = FakeRegistry(RolloutView("1", None, 0), broken={"2", "3"})
    w = watcher(registry)
    w.refresh()
    registry.view = RolloutView("2", "3", 50)
    w.refresh()
    assert versions(w) == ("1", None, 0)
    registry.broken.clear()
    w.refresh()  # retried on the next poll
    assert versions(w) == ("2", "3", 50)


def test_background_polling_picks_up_weight_changes_and_stops() -> None:
    registry = FakeRegistry(RolloutView("1", "2", 10))
    w = watcher(registry, interval_s=0.05)
    w.refresh()
    w.start()
    try:
        registry.view = RolloutView("1", "2", 60)
        deadline = time.monotonic() + 5
        while versions(w)[2] != 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert versions(w) == ("1", "2", 60)
    finally:
        w.stop()
    assert w._thread is not None and not w._thread.is_alive()
