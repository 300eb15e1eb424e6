"""The handbook features for one raw transaction, computed from the history that arrived before it.

This is the online twin of :func:`fraud_detection.features.add_features`: both read their windows, keys and
calendar rules from :data:`fraud_detection.features.FEATURES`, and ``tests/unit/workloads/test_online.py``
replays simulated history through this path and requires the offline features back. Event time drives every
window; the wall clock is never read, so a replay of history gives the features of that history.

History is passed as arrays so that a state store (:mod:`fraud_detection.state`) can hand over what one
round trip returned without building objects per event. A history may hold more than the windows need (a
store reads a little wide to round its range queries): everything is filtered here, exactly, in nanoseconds.
"""

from __future__ import annotations

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
    """A terminal's earlier transactions: event times and labels known so far (1 fraud, 0 genuine or not
    yet labelled: the handbook's delay assumes a label is known once the delay has passed)."""

    event_ns: np.ndarray = field(default_factory=lambda: _EMPTY_NS)
    fraud: np.ndarray = field(default_factory=lambda: _EMPTY_VALUES)


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
    values = {definition.amount: float(amount)}
    flags = definition.calendar_flags(np.array([event_ns], dtype=np.int64))
    values |= {name: float(flag[0]) for name, flag in flags.items()}
    values |= _card_windows(event_ns, amount, card, definition)
    values |= _terminal_windows(event_ns, terminal, delay_days, definition)
    return np.array([values[name] for name in definition.names], dtype=np.float32)


def _card_windows(event_ns: int, amount: float, card: CardHistory, definition: FeatureDefinition) -> dict[str, float]:
    """Count and mean amount in ``(t - N days, t]``, this transaction included."""
    out = {}
    not_later = card.event_ns <= event_ns
    for days in definition.windows_days:
        inside = not_later & (card.event_ns > event_ns - days * NS_PER_DAY)
        count = int(inside.sum()) + 1
        total = float(card.amount[inside].sum()) + float(amount)
        out[definition.customer_count(days)] = float(count)
        out[definition.customer_mean_amount(days)] = total / count
    return out


def _terminal_windows(
    event_ns: int, terminal: TerminalHistory, delay_days: int, definition: FeatureDefinition
) -> dict[str, float]:
    """Count and fraud share in ``(t - delay - N days, t - delay]``; risk 0 when the window is empty."""
    newest = event_ns - delay_days * NS_PER_DAY
    out = {}
    not_later = terminal.event_ns <= newest
    for days in definition.windows_days:
        inside = not_later & (terminal.event_ns > newest - days * NS_PER_DAY)
        count = int(inside.sum())
        frauds = float(terminal.fraud[inside].sum())
        out[definition.terminal_count(days)] = float(count)
        out[definition.terminal_risk(days)] = frauds / count if count else 0.0
    return out
