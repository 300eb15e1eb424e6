"""`data.source: log`: the training rows of a window of served traffic, joined with the labels that came back.

The window is counted in event time (what the payments say), not in serving time: a replayed or late stream trains
on the days it describes. It ends `label_delay_days` before the newest logged event (or where the labels that came
back end, if earlier), at midnight, so the labels of everything in it have had time to arrive and every trigger on
one day reads the same window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from ferry.contract.errors import FerryError
from ferry.contract.names import LOG_PREDICTIONS
from ferry.serving.prediction_log import EVENT_TIME_COLUMN as EVENT_TIME
from ferry.serving.prediction_log import join_key, join_labels, read_log
from ferry.serving.quality import read_labels
from ferry.spec.models import LogWindow


class WindowUnavailable(FerryError):
    """The log cannot give the window's rows; the message says what to do."""


@dataclass(frozen=True)
class WindowRows:
    """The history a window's features are computed over (the workload's own frame: the window and the
    workload's look-back before it, every scored payment), which of its rows are trained on (`train_keys`: the
    labelled payments inside the window), and what was counted on the way."""

    frame: Any
    key: str
    train_keys: Any
    start: date
    end: date  # exclusive
    logged_rows: int  # distinct payments scored in the window
    labelled_rows: int

    def training_rows(self, featured: Any) -> Any:
        """The featured history's rows that are trained on, in its order."""
        return featured[featured[self.key].isin(self.train_keys)].reset_index(drop=True)

    @property
    def interval(self) -> str:
        """ISO 8601, end exclusive: `2018-08-01/2018-08-29`."""
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


def window_bounds(newest_event: datetime, newest_labelled: datetime, window: LogWindow) -> tuple[date, date]:
    """[start, end) in whole days. `end` is midnight `label_delay_days` before the newest logged event, or the
    midnight that starts the newest labelled payment's day when that is earlier: a payment with a far-off event
    time (a smoke test's) or labels lagging more than the delay cannot move the window past what is labelled."""
    end = min((newest_event - timedelta(days=window.label_delay_days)).date(), newest_labelled.date())
    return end - timedelta(days=window.days), end


def read_window(uri: str, model: str, workload: Any, window: LogWindow, lookback_days: int = 0) -> WindowRows:
    """`model`'s window and the `lookback_days` before it, as `workload.history_from_log` turns logged payments
    into rows (a label not back yet counts as none, as in the online state), with the window's labelled payments
    marked as the ones to train on."""
    import pyarrow.compute as pc

    key = join_key(workload.raw_request_model, workload.label_model)
    labels = read_labels(uri, model, workload.label_model)
    start, end = window_bounds(*_newest_events(uri, model, key, labels), window)
    # Features look back (a card's 30 days, a terminal's risk a label delay earlier): without that history the
    # window's first weeks would train on emptier features than the online state serves.
    since = start - timedelta(days=lookback_days)
    raw = [name for name in workload.raw_request_model.model_fields]
    within = (pc.field(EVENT_TIME) >= _midnight(since)) & (pc.field(EVENT_TIME) < _midnight(end))
    scored = read_log(uri, LOG_PREDICTIONS, model, columns=raw, where=within)
    # A payment scored twice (a retried request) is one row: its first scoring is the one the state counted.
    scored = scored.take(_first_of_each(scored.column(key)))
    joined = join_labels(scored, labels, key)
    in_window = joined[workload.event_time_field] >= _midnight(start)
    labelled = joined[in_window & joined["arrival_time"].notna()]
    if len(labelled) < window.min_labelled_rows:
        raise WindowUnavailable(
            f"the window {start}..{end} (exclusive) has {len(labelled)} labelled payments of {in_window.sum()} "
            f"logged, fewer than window.min_labelled_rows ({window.min_labelled_rows}): post the labels that came "
            "back to /labels, widen window.days, or lower min_labelled_rows")
    frame = workload.history_from_log(joined[[*raw, *(c for c in workload.label_model.model_fields if c != key)]])
    return WindowRows(frame, key, labelled[key].to_numpy(), start, end, int(in_window.sum()), len(labelled))


def _newest_events(uri: str, model: str, key: str, labels: Any) -> tuple[datetime, datetime]:
    """The newest logged event time, and the newest of a payment whose label came back."""
    import pyarrow.compute as pc

    try:
        scored = read_log(uri, LOG_PREDICTIONS, model, columns=[key, EVENT_TIME])
    except FileNotFoundError:
        raise WindowUnavailable(f"nothing is logged for {model} under {uri}: serve the model and send it "
                                "traffic first (ferry up, ferry replay), or train on source: simulator") from None
    times = scored.column(EVENT_TIME)
    labelled = pc.filter(times, pc.is_in(scored.column(key), value_set=labels.column(key)))
    newest, newest_labelled = pc.max(times).as_py(), pc.max(labelled).as_py()
    if newest is None or newest_labelled is None:
        raise WindowUnavailable(f"no label has come back for a payment {model} scored ({len(times)} logged under "
                                f"{uri}): post them to /labels first")
    return newest, newest_labelled


def _first_of_each(keys: Any) -> Any:
    import numpy as np

    _, first = np.unique(keys.to_numpy(zero_copy_only=False), return_index=True)
    return np.sort(first)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)
