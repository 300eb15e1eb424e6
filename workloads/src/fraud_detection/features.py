"""The 15 handbook features: declared once (:data:`FEATURES`), computed offline vectorised here and online
per transaction in :mod:`fraud_detection.online`.

The handbook (Le Borgne et al., chapter 3.4) computes the rolling-window
features with ``groupby(key).apply(... .rolling('Nd') ...)``, which costs one
pandas rolling call per customer and per terminal (minutes on the default
dataset).  Here every window is one ``np.searchsorted`` over the rows sorted by
``(key, time)``, with cumulative sums giving counts and totals; the results are
identical to the handbook's, including its tie handling: a window ends at the
current row *in time order*, so transactions of the same key with the very same
timestamp but later in the frame are not counted, exactly as with pandas
rolling on a time index.  The online path counts what arrived before the
transaction, which is the same set when history is replayed in frame order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

NS_PER_DAY = 86_400 * 10**9
_NS_PER_HOUR = 3_600 * 10**9


@dataclass(frozen=True)
class FeatureDefinition:
    """What the features are, independent of how they are computed: both paths read their windows,
    keys and calendar rules from here, so the offline and online features cannot drift apart."""

    windows_days: tuple[int, ...] = (1, 7, 30)
    night_last_hour: int = 6  # handbook: a transaction at hour <= 6 is "at night"
    customer_key: str = "customer_id"
    terminal_key: str = "terminal_id"
    amount: str = "tx_amount"
    event_time: str = "tx_datetime"
    label: str = "tx_fraud"

    @functools.cached_property
    def names(self) -> tuple[str, ...]:  # cached: the online path asks for it with every payment
        return (
            self.amount,
            "tx_during_weekend",
            "tx_during_night",
            *(name for n in self.windows_days for name in (self.customer_count(n), self.customer_mean_amount(n))),
            *(name for n in self.windows_days for name in (self.terminal_count(n), self.terminal_risk(n))),
        )

    def customer_count(self, days: int) -> str:
        return f"{self.customer_key}_nb_tx_{days}day_window"

    def customer_mean_amount(self, days: int) -> str:
        return f"{self.customer_key}_avg_amount_{days}day_window"

    def terminal_count(self, days: int) -> str:
        return f"{self.terminal_key}_nb_tx_{days}day_window"

    def terminal_risk(self, days: int) -> str:
        return f"{self.terminal_key}_risk_{days}day_window"

    def customer_lookback_ns(self) -> int:
        """How far back a customer's history can matter: the longest window."""
        return max(self.windows_days) * NS_PER_DAY

    def terminal_lookback_ns(self, delay_days: int) -> int:
        """How far back a terminal's history can matter: the label delay plus the longest window."""
        return (delay_days + max(self.windows_days)) * NS_PER_DAY

    def calendar_flags(self, ns: np.ndarray) -> dict[str, np.ndarray]:
        """Weekend and night flags from wall-clock nanoseconds since the epoch."""
        days = np.floor_divide(ns, NS_PER_DAY)
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday == 0
        hour = np.floor_divide(ns - days * NS_PER_DAY, _NS_PER_HOUR)
        return {
            "tx_during_weekend": (weekday >= 5).astype(np.float32),
            "tx_during_night": (hour <= self.night_last_hour).astype(np.float32),
        }


FEATURES = FeatureDefinition()
WINDOWS_DAYS: tuple[int, ...] = FEATURES.windows_days
FEATURE_NAMES: tuple[str, ...] = FEATURES.names
_REQUIRED = (FEATURES.event_time, FEATURES.customer_key, FEATURES.terminal_key, FEATURES.amount, FEATURES.label)


def add_features(df: pd.DataFrame, delay_days: int = 7) -> pd.DataFrame:
    """Return a copy of ``df`` with the handbook features added as float32.

    * ``tx_during_weekend``: Saturday or Sunday; ``tx_during_night``: hour <= 6.
    * ``customer_id_nb_tx_Nday_window`` / ``customer_id_avg_amount_Nday_window``:
      count and mean amount of the customer's transactions in the trailing
      window ``(t - N days, t]``, the current transaction included.
    * ``terminal_id_nb_tx_Nday_window`` / ``terminal_id_risk_Nday_window``:
      count and fraud share of the terminal's transactions in
      ``(t - (delay_days + N) days, t - delay_days days]``; the delay models
      fraud labels that are only known a week later, so recent frauds must not
      leak into the features.  Risk is 0 when the count is 0.

    ``tx_amount`` is already a column and is left unchanged.
    """
    _validate(df, delay_days)
    f = FEATURES
    ns = _datetime_ns(df[f.event_time])
    times, units_per_day = _coarsest_exact_units(ns)
    out = df.copy()
    columns = f.calendar_flags(ns)
    amount = df[f.amount].to_numpy(dtype=np.float64)
    columns |= _customer_features(df[f.customer_key].to_numpy(), times, amount, units_per_day)
    fraud = df[f.label].to_numpy(dtype=np.float64)
    columns |= _terminal_features(df[f.terminal_key].to_numpy(), times, fraud, units_per_day, delay_days)
    for name in FEATURE_NAMES[1:]:
        out[name] = columns[name].astype(np.float32)
    return out


def _validate(df: pd.DataFrame, delay_days: int) -> None:
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"add_features: missing columns {missing}")
    if isinstance(delay_days, bool) or not isinstance(delay_days, (int, np.integer)) or delay_days < 1:
        # With no delay the terminal risk would contain the row's own label.
        raise ValueError(f"add_features: delay_days must be an int >= 1, got {delay_days!r}")
    if df[FEATURES.event_time].isna().any():
        raise ValueError("add_features: tx_datetime contains missing values")


def _datetime_ns(column: pd.Series) -> np.ndarray:
    """Wall-clock nanoseconds since the epoch (time zones are dropped, not converted)."""
    column = pd.to_datetime(column)
    if column.dt.tz is not None:
        column = column.dt.tz_localize(None)
    return column.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _coarsest_exact_units(ns: np.ndarray) -> tuple[np.ndarray, int]:
    """Express times in the coarsest unit (s, ms, us, ns) that loses nothing.

    The combined ``key * stride + time`` sort key must fit in int64; with
    nanoseconds 10 000 terminals over half a year would overflow, with the
    whole seconds that the simulator produces it never does.
    """
    for unit in (10**9, 10**6, 10**3, 1):
        if not np.any(ns % unit):
            return ns // unit, NS_PER_DAY // unit
    raise AssertionError("unreachable: every int64 is a multiple of 1")


@dataclass(frozen=True)
class GroupedTimes:
    """Rows sorted by (key, time) with a strictly group-separated sort key.

    ``combined = rank(key) * stride + time + offset`` increases with time
    inside a group, and every value of a group, even after subtracting a
    window of up to ``max_window`` units, stays above all values of the
    previous group, so one ``searchsorted`` finds window starts for all groups.
    """

    order: np.ndarray  # row permutation: sorted position -> original row
    combined: np.ndarray  # int64, ascending

    @classmethod
    def build(cls, keys: np.ndarray, times: np.ndarray, max_window: int) -> GroupedTimes:
        order = np.lexsort((times, keys))  # stable: ties keep frame order
        sorted_keys, sorted_times = keys[order], times[order]
        rank = np.zeros(len(order), dtype=np.int64)
        if len(order):
            np.cumsum(sorted_keys[1:] != sorted_keys[:-1], out=rank[1:])
        t0 = int(sorted_times.min()) if len(order) else 0
        stride = (int(sorted_times.max()) - t0 if len(order) else 0) + max_window + 1
        if (int(rank[-1]) + 1 if len(order) else 0) * stride >= 2**62:
            raise ValueError("add_features: time span x number of keys too large for int64")
        return cls(order, rank * stride + (sorted_times - t0) + max_window)

    def window_starts(self, window: int) -> np.ndarray:
        """Sorted position of the first row in ``(t - window, t]`` for each row."""
        starts = np.searchsorted(self.combined, self.combined - window, side="right")
        return np.minimum(starts, np.arange(1, len(starts) + 1))  # window ends at the row

    def to_frame_order(self, values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        out[self.order] = values
        return out


def _prefix_sums(values: np.ndarray) -> np.ndarray:
    sums = np.zeros(len(values) + 1, dtype=np.float64)
    np.cumsum(values, out=sums[1:])
    return sums


def _customer_features(
    keys: np.ndarray, times: np.ndarray, amount: np.ndarray, units_per_day: int
) -> dict[str, np.ndarray]:
    """Count and mean amount in the trailing N-day window, current row included."""
    groups = GroupedTimes.build(keys, times, max(FEATURES.windows_days) * units_per_day)
    sums = _prefix_sums(amount[groups.order])
    ends = np.arange(1, len(keys) + 1)  # exclusive end: the current row is counted
    out = {}
    for n in FEATURES.windows_days:
        starts = groups.window_starts(n * units_per_day)
        count = (ends - starts).astype(np.float64)
        total = sums[ends] - sums[starts]
        out[FEATURES.customer_count(n)] = groups.to_frame_order(count)
        out[FEATURES.customer_mean_amount(n)] = groups.to_frame_order(total / count)
    return out


def _terminal_features(
    keys: np.ndarray, times: np.ndarray, fraud: np.ndarray, units_per_day: int, delay_days: int
) -> dict[str, np.ndarray]:
    """Count and fraud share in ``(t - delay - N, t - delay]`` (handbook: the
    (delay + N)-day rolling window minus the delay-day rolling window)."""
    delay = delay_days * units_per_day
    groups = GroupedTimes.build(keys, times, delay + max(FEATURES.windows_days) * units_per_day)
    sums = _prefix_sums(fraud[groups.order])
    delay_starts = groups.window_starts(delay)
    out = {}
    for n in FEATURES.windows_days:
        starts = groups.window_starts(delay + n * units_per_day)
        count = (delay_starts - starts).astype(np.float64)
        frauds = sums[delay_starts] - sums[starts]
        risk = np.divide(frauds, count, out=np.zeros_like(frauds), where=count > 0)
        out[FEATURES.terminal_count(n)] = groups.to_frame_order(count)
        out[FEATURES.terminal_risk(n)] = groups.to_frame_order(risk)
    return out
