"""The feature state's last round trip (features stored for repeats, histories kept, records indexed), run off
the request path by one thread per `FeatureState`, for every batch that queued since the last one at once.

A request used to wait for the last round trip of the batch before it, so that a repeat of one of its payments in
this replica found the features stored. Under a steady load that put the previous request's upkeep on every
request's path, and one upkeep per request cost Redis a script call and this process a round trip each time.
Now a repeat finds the features of a batch still queued here (`features_of`), so nothing waits, and the batches
that queued within `WINDOW_S` share one round trip and one index update. Another replica's repeat of a payment
whose features are not stored yet is "in flight" (retry), as it always was while a request was being scored.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ferry.contract.errors import StateStoreUnavailable
from fraud_detection.state_layout import SHAS, TRIM, TRIM_FRACTION

# How long a queued batch waits for others to share its round trip: a few single payments at the rates one replica
# serves, far below STALE_CLAIM_S (a scorer is presumed dead only after a minute).
WINDOW_S = 0.01
logger = logging.getLogger("fraud_detection.state")


class Finisher:
    """Queue of batches whose last round trip is still to run; `send` runs it for several batches at once."""

    def __init__(self, send: Callable[[Sequence[Any]], None], stale_claim_s: int, window_s: float = WINDOW_S):
        self._send, self._stale_claim_s, self._window_s = send, stale_claim_s, window_s
        self._queued: list[tuple[Any, list[str]]] = []
        self._unstored: dict[str, np.ndarray] = {}  # features computed here, not yet stored in Redis
        self._sending = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self.failed = 0  # batches whose last round trip failed: their rows recover as stale claims

    def submit(self, batch: Any, computed: dict[str, np.ndarray]) -> None:
        """Queue a batch's last round trip; `computed`: its features by transaction id, answered to repeats here
        until Redis holds them."""
        with self._changed:
            self._unstored.update(computed)
            self._queued.append((batch, list(computed)))
            if self._thread is None:  # started on first use: a state that never scores has no thread
                self._thread = threading.Thread(target=self._run, name="ferry-state", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def features_of(self, transaction_id: str) -> np.ndarray | None:
        """The features this process computed for a transaction whose last round trip has not run yet."""
        return self._unstored.get(transaction_id)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued batch's last round trip has run (tests, benchmarks, a router's shutdown), at
        most `timeout_s`; whether it has."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            while self._queued or self._sending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queued:
                    self._changed.wait()
            time.sleep(self._window_s)  # let the batches of the next few requests join this round trip
            with self._changed:
                taken, self._queued, self._sending = self._queued, [], True
            try:
                self._send([batch for batch, _ in taken])
            except StateStoreUnavailable as exc:
                self._failed(len(taken), exc)
            except Exception as exc:  # the thread must outlive any one round trip
                logger.exception("the feature state's last round trip failed")
                self._failed(len(taken), exc)
            finally:
                with self._changed:
                    for _, ids in taken:
                        for transaction_id in ids:
                            self._unstored.pop(transaction_id, None)
                    self._sending = False
                    self._changed.notify_all()

    def _failed(self, batches: int, exc: Exception) -> None:
        self.failed += batches
        logger.warning("storing %d batch(es)' features failed (their transactions recover as stale claims in %d s): "
                       "%s", batches, self._stale_claim_s, exc)


def keep(newest: dict[str, int], blobs: dict[str, bytes], span_us: int, entry: struct.Struct) -> list[tuple[Any, ...]]:
    """Commands that trim the histories an eighth of which has aged out (older than their newest payment less the
    span), and renew the expiry (twice the span) of those whose last marker is more than a span old, appending a
    new marker: one vectorised pass over every history the batches read."""
    names = list(newest)
    if not names:
        return []
    chunks = [blobs[name] for name in names]
    times = np.frombuffer(b"".join(chunks), dtype="<f8")[::entry.size // 8]
    owner = np.repeat(np.arange(len(names)), [len(chunk) // entry.size for chunk in chunks])
    latest = np.array([newest[name] for name in names], dtype=np.float64)
    aged = np.bincount(owner, weights=(times <= latest[owner] - span_us).astype(np.float64), minlength=len(names))
    total = np.bincount(owner, minlength=len(names))
    renewed = np.zeros(len(names))  # minus the event time of each history's last renewal; 0: never
    markers = times < 0
    np.minimum.at(renewed, owner[markers], times[markers])
    commands: list[tuple[Any, ...]] = []
    trim = np.flatnonzero((aged > 0) & (aged * TRIM_FRACTION >= total))
    if trim.size:
        commands.append(("EVALSHA", SHAS[TRIM], len(trim), *(names[k] for k in trim),
                         *(arg for k in trim for arg in (entry.size, int(latest[k]) - span_us))))
    for k in np.flatnonzero((renewed == 0) | (latest > span_us - renewed)):
        marker = entry.pack(-latest[k], 0.0) if entry.size == 16 else entry.pack(-latest[k])
        commands += [("APPEND", names[k], marker), ("EXPIRE", names[k], 2 * span_us // 10**6)]
    return commands
