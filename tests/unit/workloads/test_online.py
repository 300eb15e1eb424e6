"""The online features equal the offline ones when history is replayed in event-time order.

The replay here keeps history in plain lists and delivers each label exactly when the handbook's delay says
it is known, so the only thing under test is :func:`online_features` against :func:`add_features`. The same
replay against a real Redis is ``tests/integration/test_feature_state.py``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from fraud_detection.features import FEATURE_NAMES, FEATURES, NS_PER_DAY, add_features
from fraud_detection.online import (
    CardHistory,
    TerminalHistory,
    event_time_ns,
    feature_matrix,
    online_features,
    window_totals,
)
from fraud_detection.simulator import SimulatorParams, simulate


def replay_in_memory(frame: pd.DataFrame, delay_days: int) -> np.ndarray:
    """Score every row in frame order; a fraud joins its terminal's known frauds only once the delay has
    passed in event time (labels arrive late), never before."""
    cards: dict[int, list[tuple[int, float]]] = defaultdict(list)
    terminals: dict[int, list[int]] = defaultdict(list)
    frauds: dict[int, list[int]] = defaultdict(list)
    pending: list[tuple[int, int, int]] = []  # (label due ns, terminal, event ns) of each fraud
    rows = []
    for tx in frame.itertuples(index=False):
        ns = event_time_ns(tx.tx_datetime.to_pydatetime())
        while pending and pending[0][0] <= ns:
            _, terminal, at = pending.pop(0)
            frauds[terminal].append(at)
        card = cards[tx.customer_id]
        card_history = CardHistory(np.array([c[0] for c in card], dtype=np.int64),
                                   np.array([c[1] for c in card], dtype=np.float64))
        term_history = TerminalHistory(np.array(terminals[tx.terminal_id], dtype=np.int64),
                                       np.array(frauds[tx.terminal_id], dtype=np.int64))
        rows.append(online_features(ns, tx.tx_amount, card_history, term_history, delay_days))
        card.append((ns, float(tx.tx_amount)))
        terminals[tx.terminal_id].append(ns)
        if tx.tx_fraud:
            pending.append((ns + delay_days * NS_PER_DAY, tx.terminal_id, ns))
    return np.vstack(rows)


def assert_same_features(online: np.ndarray, offline: pd.DataFrame) -> None:
    expected = offline[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    assert online.shape == expected.shape
    np.testing.assert_allclose(online, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("delay_days", [7, 2])
def test_replayed_history_gives_the_offline_features(delay_days: int) -> None:
    frame = simulate(SimulatorParams(customers=30, terminals=60, days=50, seed=3))
    assert frame["tx_fraud"].sum() > 0, "the replay must exercise terminal risk"
    online = replay_in_memory(frame, delay_days)
    offline = add_features(frame, delay_days=delay_days)
    assert_same_features(online, offline)
    risk = offline[FEATURES.terminal_risk(30)].to_numpy()
    assert (risk > 0).any(), "some terminal must carry risk, or the label path is not under test"


def test_same_timestamp_ties_follow_arrival_order() -> None:
    """Two payments of one card at the same second: the first counts only itself, the second both, as the
    offline path counts rows in frame order."""
    rows = [(datetime(2018, 4, 1, 10), 1, 5, 10.0, 0), (datetime(2018, 4, 1, 10), 1, 6, 30.0, 0)]
    frame = pd.DataFrame(rows, columns=["tx_datetime", "customer_id", "terminal_id", "tx_amount", "tx_fraud"])
    frame["tx_datetime"] = pd.to_datetime(frame["tx_datetime"])
    online = replay_in_memory(frame, 7)
    assert_same_features(online, add_features(frame))
    count_1d = FEATURE_NAMES.index(FEATURES.customer_count(1))
    assert online[:, count_1d].tolist() == [1.0, 2.0]


def test_a_label_not_yet_known_counts_as_genuine() -> None:
    """A fraud whose label has not arrived leaves the terminal's risk at 0; once known it counts."""
    t0 = event_time_ns(datetime(2018, 4, 1))
    terminal = TerminalHistory(np.array([t0], dtype=np.int64))
    later = t0 + 8 * NS_PER_DAY
    risk_7d = FEATURE_NAMES.index(FEATURES.terminal_risk(7))
    assert online_features(later, 5.0, CardHistory(), terminal, 7)[risk_7d] == 0.0
    labelled = TerminalHistory(terminal.event_ns, np.array([t0], dtype=np.int64))
    assert online_features(later, 5.0, CardHistory(), labelled, 7)[risk_7d] == 1.0


def test_a_batch_gives_each_row_its_own_windows() -> None:
    """Summing a whole batch at once must keep rows apart, empty histories included."""
    t = event_time_ns(datetime(2018, 5, 1, 12))
    cards = [CardHistory(), CardHistory(np.array([t - NS_PER_DAY // 2], dtype=np.int64), np.array([8.0])),
             CardHistory()]
    terminals = [TerminalHistory(np.array([t - 8 * NS_PER_DAY], dtype=np.int64)), TerminalHistory(),
                 TerminalHistory(np.array([t - 9 * NS_PER_DAY] * 2, dtype=np.int64),
                                 np.array([t - 9 * NS_PER_DAY], dtype=np.int64))]
    times = np.full(3, t, dtype=np.int64)
    batch = feature_matrix(times, np.array([1.0, 2.0, 3.0]), window_totals(times, cards, terminals, 7))
    alone = np.vstack([online_features(t, a, c, m, 7) for a, c, m in zip([1.0, 2.0, 3.0], cards, terminals,
                                                                           strict=True)])
    np.testing.assert_array_equal(batch, alone)
    named = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in batch]
    assert [row[FEATURES.customer_count(1)] for row in named] == [1.0, 2.0, 1.0]
    assert [row[FEATURES.terminal_risk(7)] for row in named] == [0.0, 0.0, 0.5]


def test_history_outside_the_windows_is_ignored() -> None:
    """A store may read a little wide; events after the transaction or before every window never count."""
    t = event_time_ns(datetime(2018, 5, 1, 12))
    card = CardHistory(np.array([t - 31 * NS_PER_DAY, t + 1], dtype=np.int64), np.array([1000.0, 1000.0]))
    features = dict(zip(FEATURE_NAMES, online_features(t, 20.0, card, TerminalHistory(), 7), strict=True))
    assert features[FEATURES.customer_count(30)] == 1.0
    assert features[FEATURES.customer_mean_amount(30)] == 20.0


def test_event_time_drops_the_zone_like_the_offline_path() -> None:
    from datetime import timedelta, timezone

    aware = datetime(2018, 4, 7, 3, 0, tzinfo=timezone(timedelta(hours=5)))
    expected = pd.Timestamp("2018-04-07 03:00").value
    assert event_time_ns(aware) == expected


def test_window_edges_match_the_offline_path_exactly() -> None:
    """Payments exactly N days (and delay + N days) apart sit on the open end of a window: the simulator's
    random seconds almost never hit that, so it is built here."""
    t0 = datetime(2018, 4, 1, 12)
    day = pd.Timedelta(days=1)
    stamps = [t0, t0 + day, t0 + 7 * day, t0 + 8 * day, t0 + 14 * day, t0 + 15 * day, t0 + 37 * day, t0 + 38 * day]
    rows = [(stamp, 1, 9, 10.0 * (i + 1), i % 2) for i, stamp in enumerate(stamps)]
    frame = pd.DataFrame(rows, columns=["tx_datetime", "customer_id", "terminal_id", "tx_amount", "tx_fraud"])
    frame["tx_datetime"] = pd.to_datetime(frame["tx_datetime"])
    assert_same_features(replay_in_memory(frame, 7), add_features(frame, delay_days=7))
