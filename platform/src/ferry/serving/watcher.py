"""The router's view of the registry (DESIGN §4: the registry is the rollout state).

A background thread re-reads the champion and challenger aliases and the challenger's weight tag every
few seconds, loads versions it has not loaded yet, and publishes a new immutable `RolloutState`. Request
handlers read `watcher.state` once per batch: swapping one reference is atomic, so a batch never mixes
two states and no lock sits on the request path.

When the registry cannot be read, the last state stays in force (a champion that was serving keeps
serving) and one warning is logged per outage, not one per poll. When a version cannot be loaded, that
alias keeps its previous model (or, for a new challenger, gets no traffic) and the load is retried on
the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ferry.adapters.registry_port import RolloutView

# A child of Serve's logger, so inside a replica these lines land in the replica's Serve log.
LOGGER_NAME = "ray.serve.ferry"
# How often `wake` may read the registry at most: /readyz is asked every 0.5 s by `ferry up` (and every few
# seconds by a kubelet), and each read is a few MLflow calls.
WAKE_GAP_S = 0.5
logger = logging.getLogger(LOGGER_NAME)

ReadView = Callable[[], RolloutView]
LoadVersion = Callable[[str], Any]


@dataclass(frozen=True)
class Loaded:
    version: str
    module: Any


@dataclass(frozen=True)
class RolloutState:
    champion: Loaded | None = None
    challenger: Loaded | None = None
    weight: int = 0  # share of keys (0-100) the challenger serves; 0 whenever there is no challenger
    shadow_sample: float = 0.0  # share of rows the model that did not answer also scores (ferry.serving.shadow)


class BackgroundLoop:
    """One daemon thread running `_loop` until `stop()`: the registry watcher and the drift monitor."""

    model: str
    THREAD_PREFIX = "ferry-loop"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"{self.THREAD_PREFIX}-{self.model}", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


class RegistryWatcher(BackgroundLoop):
    THREAD_PREFIX = "ferry-watch"

    def __init__(self, model: str, read_view: ReadView, load: LoadVersion, interval_s: float) -> None:
        self.model = model
        self.interval_s = interval_s
        self.state = RolloutState()
        self.reachable = False
        self.last_error: str | None = None
        self.last_poll: float | None = None  # monotonic time of the last successful read
        self._read_view = read_view
        self._load = load
        self._wake = threading.Event()
        super().__init__()

    def refresh(self) -> bool:
        """Read the registry once and publish the new state; False (state unchanged) when unreachable."""
        try:
            view = self._read_view()
        except Exception as exc:  # any client error: the registry is down or answering garbage
            self._unreachable(exc)
            return False
        if not self.reachable and self.last_error is not None:
            logger.warning("registry for %s is reachable again", self.model)
        self.reachable, self.last_error, self.last_poll = True, None, time.monotonic()
        self.state = self._next_state(view)
        return True

    def wake(self) -> None:
        """Read the registry now rather than at the next poll (at most once every WAKE_GAP_S): `/readyz` asks while
        no champion is loaded, so a router that started before its model's first version (`ferry up` deploys it
        when the run starts, as Argo CD applies a RayService beside its Workflow) serves as soon as rollout has
        set the champion, not up to a poll interval later."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        super().stop(timeout_s)

    def _loop(self) -> None:
        last_read = time.monotonic()
        while True:
            woken = self._wake.wait(self.interval_s)
            if woken:
                self._wake.clear()
                if self._stop.wait(max(0.0, last_read + WAKE_GAP_S - time.monotonic())):
                    return
            if self._stop.is_set():
                return
            last_read = time.monotonic()
            self.refresh()

    def _unreachable(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {str(exc)[:300]}"
        if self.reachable or self.last_error is None:
            serving = self.state.champion.version if self.state.champion else "nothing"
            logger.warning("registry for %s unreachable (%s); keeping the last known state (champion %s)",
                           self.model, message, serving)
        self.reachable, self.last_error = False, message

    def _next_state(self, view: RolloutView) -> RolloutState:
        current = self.state
        champion = self._resolve(view.champion, current, "champion")
        wanted = view.challenger if view.challenger != view.champion else None
        challenger = self._resolve(wanted, current, "challenger")
        weight = view.weight if challenger is not None else 0
        shadow = view.shadow_sample if challenger is not None else 0.0
        if (champion, challenger, weight, shadow) != (current.champion, current.challenger, current.weight,
                                                      current.shadow_sample):
            logger.info("%s now serves champion %s, challenger %s at weight %d (shadow sample %.2f)", self.model,
                        champion.version if champion else None, challenger.version if challenger else None, weight,
                        shadow)
        return RolloutState(champion=champion, challenger=challenger, weight=weight, shadow_sample=shadow)

    def _resolve(self, version: str | None, current: RolloutState, role: str) -> Loaded | None:
        """The loaded model for `version`, reusing any model already in memory (a promotion loads nothing)."""
        if version is None:
            return None
        for known in (current.champion, current.challenger):
            if known is not None and known.version == version:
                return known
        try:
            return Loaded(version, self._load(version))
        except Exception as exc:  # a broken or refused artifact must not take the router down
            logger.error("cannot load %s version %s as %s: %s; retrying next poll", self.model, version, role, exc)
            return current.champion if role == "champion" else None
