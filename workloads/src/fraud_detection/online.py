"""The handbook features for one raw transaction, computed from the history that arrived before it.

This is the online twin of :func:`fraud_detection.features.add_features`: both read their windows, keys and
calendar rules from :data:`fraud_detection.features.FEATURES`, and ``tests/unit/workloads/test_online.py``
replays simulated history through this path and requires the offline features back. Event time drives every
window; the wall clock is never read, so a replay of history gives the features of that history.

History is passed as arrays, and a batch's windows are summed at once (:func:`window_totals`), so that a
state store (:mod:`fraud_detection.state`) can hand over what one round trip returned without work per event.
A history may hold more than the windows need: everything is filtered here, exactly, in nanoseconds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from fraud_detection.features import FEATURES, NS_PER_DAY, FeatureDefinition

_EMPTY_NS = np.zeros(0, dtype=np.int64)
_EMPTY_VALUES = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True)
class CardHistory:
    """A card's earlier transactions: event times (ns since the epoch) and amounts."""

    event_ns: np.ndarray = field(default_factory=lambda: _EMPTY_NS)
    amount: np.ndarray = field(default_factory=lambda: _EMPTY_VALUES)


@dataclass(frozen=True)
class TerminalHistory:
    """A terminal's earlier transactions (event times) and, of those, the ones known to be fraud so far: the
    handbook's delay assumes a label is known once the delay has passed; one not yet known counts as genuine."""

    event_ns: np.ndarray = field(default_factory=lambda: _EMPTY_NS)
    fraud_ns: np.ndarray = field(default_factory=lambda: _EMPTY_NS)


def event_time_ns(value: datetime) -> int:
    """Wall-clock nanoseconds since the epoch, time zone dropped (not converted), as the offline path does."""
    naive = value.replace(tzinfo=None)
    delta = naive - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000


def online_features(
    event_ns: int,
    amount: float,
    card: CardHistory,
    terminal: TerminalHistory,
    delay_days: int,
    definition: FeatureDefinition = FEATURES,
) -> np.ndarray:
    """The 15 features of one transaction, in ``definition.names`` order, as float32."""
    times = np.array([event_ns], dtype=np.int64)
    totals = window_totals(times, [card], [terminal], delay_days, definition)
    return feature_matrix(times, np.array([amount]), totals, definition)[0]


@dataclass(frozen=True)
class BatchHistory:
    """A batch's histories end to end: each kind's event times (ns) and the row each belongs to, and the card
    payments' amounts. A state store fills it straight from what it read (fraud_detection.state)."""

    card_ns: np.ndarray
    card_amount: np.ndarray
    card_rows: np.ndarray
    terminal_ns: np.ndarray
    terminal_rows: np.ndarray
    fraud_ns: np.ndarray
    fraud_rows: np.ndarray

    @classmethod
    def of(cls, cards: Sequence[CardHistory], terminals: Sequence[TerminalHistory]) -> BatchHistory:
        card_ns, card_rows = _segments([card.event_ns for card in cards])
        terminal_ns, terminal_rows = _segments([terminal.event_ns for terminal in terminals])
        fraud_ns, fraud_rows = _segments([terminal.fraud_ns for terminal in terminals])
        amounts = np.concatenate([card.amount for card in cards]) if cards else _EMPTY_VALUES
        return cls(card_ns, amounts, card_rows, terminal_ns, terminal_rows, fraud_ns, fraud_rows)


def window_totals(
    event_ns: np.ndarray,
    cards: Sequence[CardHistory],
    terminals: Sequence[TerminalHistory],
    delay_days: int,
    definition: FeatureDefinition = FEATURES,
) -> np.ndarray:
    """What each row's windows hold, as a (rows, 4, windows) array, windows in ``definition.windows_days``
    order, computed for the whole batch at once:

    0. the card's earlier payments in ``(t - N days, t]``;  1. their amount total;
    2. the terminal's payments in ``(t - delay - N days, t - delay]``;  3. how many of those are known frauds.

    The features follow from these alone, by :func:`feature_matrix`.
    """
    return batch_window_totals(event_ns, BatchHistory.of(cards, terminals), delay_days, definition)


def batch_window_totals(event_ns: np.ndarray, history: BatchHistory, delay_days: int,
                        definition: FeatureDefinition = FEATURES) -> np.ndarray:
    """:func:`window_totals` of histories already laid end to end."""
    event_ns = np.asarray(event_ns, dtype=np.int64)
    labelled = event_ns - delay_days * NS_PER_DAY
    spans = np.asarray(definition.windows_days, dtype=np.int64) * NS_PER_DAY
    out = np.empty((len(event_ns), 4, len(spans)), dtype=np.float64)
    out[:, 0], out[:, 1] = _window_sums(history.card_ns, history.card_rows, event_ns, spans, history.card_amount)
    out[:, 2] = _window_sums(history.terminal_ns, history.terminal_rows, labelled, spans)[0]
    out[:, 3] = _window_sums(history.fraud_ns, history.fraud_rows, labelled, spans)[0]
    return out


def _segments(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The arrays end to end, and for each element the row it belongs to."""
    if not arrays:
        return _EMPTY_NS, _EMPTY_NS
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    return np.concatenate(arrays).astype(np.int64, copy=False), np.repeat(np.arange(len(arrays)), lengths)


def _window_sums(times: np.ndarray, rows: np.ndarray, newest: np.ndarray, spans: np.ndarray,
                 values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row and window, (rows, windows): how many of its times fall in ``(newest - span, newest]``, and the
    sum of their values, added in history order. What does not depend on the window is done once (for one
    payment the number of numpy calls is the cost)."""
    age = newest[rows] - times
    past = age >= 0
    count = np.empty((len(newest), len(spans)), dtype=np.float64)
    total = count if values is None else np.empty_like(count)
    for w, span in enumerate(spans.tolist()):
        inside = past & (age < span)
        owners = rows[inside]
        count[:, w] = np.bincount(owners, minlength=len(newest))
        if values is not None:
            total[:, w] = np.bincount(owners, weights=values[inside], minlength=len(newest))
    return count, total


def feature_matrix(
    event_ns: np.ndarray, amount: np.ndarray, totals: np.ndarray, definition: FeatureDefinition = FEATURES
) -> np.ndarray:
    """Features of a batch, (rows, 15) float32, from each row's event time, amount and window totals
    ((rows, 4, windows), see :func:`window_totals`). The card windows count the transaction itself; a
    terminal window with no payment has risk 0."""
    amount = np.asarray(amount, dtype=np.float64)
    columns = _columns(definition)
    out = np.empty((len(amount), len(definition.names)), dtype=np.float32)  # float64 values round as astype would
    out[:, columns.amount] = amount
    for name, flag in definition.calendar_flags(np.asarray(event_ns, dtype=np.int64)).items():
        out[:, columns.of[name]] = flag
    card_count = totals[:, 0, :] + 1
    terminal_count, frauds = totals[:, 2, :], totals[:, 3, :]
    out[:, columns.customer_count] = card_count
    out[:, columns.customer_mean_amount] = (totals[:, 1, :] + amount[:, None]) / card_count
    out[:, columns.terminal_count] = terminal_count
    out[:, columns.terminal_risk] = np.divide(frauds, terminal_count, out=np.zeros_like(frauds),
                                              where=terminal_count > 0)
    return out


@dataclass(frozen=True)
class _Columns:
    """Where each feature goes in a row of ``definition.names``; the windowed ones in ``windows_days`` order."""

    of: dict[str, int]
    amount: int
    customer_count: list[int]
    customer_mean_amount: list[int]
    terminal_count: list[int]
    terminal_risk: list[int]


@functools.lru_cache(maxsize=8)
def _columns(definition: FeatureDefinition) -> _Columns:
    of = {name: i for i, name in enumerate(definition.names)}
    days = definition.windows_days
    return _Columns(of, of[definition.amount], [of[definition.customer_count(n)] for n in days],
                    [of[definition.customer_mean_amount(n)] for n in days],
                    [of[definition.terminal_count(n)] for n in days], [of[definition.terminal_risk(n)] for n in days])
