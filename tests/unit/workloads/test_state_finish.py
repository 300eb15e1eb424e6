"""The feature state's upkeep queue (fraud_detection.state_finish) without Redis: batches queued close together
share one send, a repeat is answered from what was computed until the send has run, a failed send is counted and
never kills the thread, and flush waits for all of it, within its bound."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from ferry.contract.errors import StateStoreUnavailable
from fraud_detection.state_finish import Finisher

BOUND_S = 10.0  # every wait here is bounded; none should come near it


class Recorder:
    def __init__(self, gate: threading.Event | None = None, failures: int = 0) -> None:
        self.sends: list[list[object]] = []
        self.gate, self.failures = gate, failures
        self.started = threading.Event()

    def __call__(self, batches: Sequence[object]) -> None:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(BOUND_S)
        self.sends.append(list(batches))
        if self.failures:
            self.failures -= 1
            raise StateStoreUnavailable("Redis went away")


def test_batches_queued_together_share_one_send_and_flush_waits_for_it() -> None:
    send = Recorder()
    finisher = Finisher(send, stale_claim_s=60, window_s=0.2)
    for name in ("a", "b", "c"):
        finisher.submit(name, {name: np.ones(2, dtype=np.float32)})
    assert finisher.flush(BOUND_S)
    assert send.sends == [["a", "b", "c"]]
    assert finisher.features_of("a") is None, "stored: a repeat now reads Redis"


def test_a_repeat_is_answered_from_what_was_computed_until_its_send_has_run() -> None:
    gate = threading.Event()
    send = Recorder(gate)
    finisher = Finisher(send, stale_claim_s=60, window_s=0.0)
    features = np.arange(3, dtype=np.float32)
    finisher.submit("batch", {"tx-1": features})
    assert send.started.wait(BOUND_S)
    np.testing.assert_array_equal(finisher.features_of("tx-1"), features)
    assert not finisher.flush(timeout_s=0.05), "the send is still running: flush says so when its bound is up"
    gate.set()
    assert finisher.flush(BOUND_S)
    assert finisher.features_of("tx-1") is None


def test_a_failed_send_is_counted_and_the_next_batches_are_still_sent() -> None:
    send = Recorder(failures=1)
    finisher = Finisher(send, stale_claim_s=60, window_s=0.0)
    finisher.submit("lost", {"tx-1": np.zeros(1, dtype=np.float32)})
    assert finisher.flush(BOUND_S)
    assert finisher.failed == 1
    assert finisher.features_of("tx-1") is None, "left to recover as a stale claim, as a dead scorer's would"
    finisher.submit("next", {"tx-2": np.zeros(1, dtype=np.float32)})
    assert finisher.flush(BOUND_S)
    assert send.sends == [["lost"], ["next"]] and finisher.failed == 1
