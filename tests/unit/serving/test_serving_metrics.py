"""The score buckets: cumulative like Prometheus' `le`, tallied in-process, flushed to Ray by a thread."""

from __future__ import annotations

import threading

import numpy as np

from ferry.serving.metrics import SCORE_BOUNDARIES, SCORE_LE, ScoreTally, TallyFlusher, cumulative_counts


def test_score_buckets_are_cumulative_like_prometheus_le() -> None:
    counts = cumulative_counts(np.array([0.0, 0.05, 0.051, 0.5, 1.0, 0.97])).tolist()
    assert len(counts) == len(SCORE_LE) == len(SCORE_BOUNDARIES) + 1 and SCORE_LE[0] == "0.05"
    assert SCORE_LE[-1] == "+Inf" and counts[-1] == 6
    assert counts[0] == 2 and counts[1] == 3 and counts[SCORE_LE.index("0.5")] == 4 and counts[-2] == 4
    assert counts == sorted(counts) and cumulative_counts(np.array([])).tolist() == [0] * len(SCORE_LE)



def test_the_tally_adds_per_variant_until_drained() -> None:
    tally = ScoreTally()
    one = cumulative_counts(np.array([0.2]))
    tally.add("1", "champion", one)
    tally.add("1", "champion", cumulative_counts(np.array([0.9, 0.01])))
    tally.add("2", "challenger", one)
    drained = tally.drain()
    assert drained[("1", "champion")][-1] == 3 and drained[("2", "challenger")].tolist() == one.tolist()
    assert one[-1] == 1  # what was added is not changed by later adds
    assert tally.drain() == {}


class Flushes:
    def __init__(self) -> None:
        self.count = 0
        self.twice = threading.Event()

    def flush(self) -> None:
        self.count += 1
        if self.count >= 2:
            self.twice.set()


def test_the_flusher_flushes_on_its_interval_and_once_more_when_stopped() -> None:
    recorder = Flushes()
    flusher = TallyFlusher("m", recorder, interval_s=0.01)  # type: ignore[arg-type]
    flusher.start()
    assert recorder.twice.wait(5)
    flusher.stop()
    stopped_at = recorder.count
    assert stopped_at >= 3 and not flusher._thread.is_alive()  # type: ignore[union-attr]
