"""The temporal split: each user's history, in time order, cut into fit, validation and test periods.

Every user keeps the oldest part of their ratings for fitting, the next part for validation (what tuning
optimises) and the newest part for test, so a model is always asked about a user's future from their past. A
global date cutoff would be the stricter protocol, but MovieLens 100K was collected user by user: past a
cutoff at the 80th percentile of time, only 109 of its 943 users have both a past and a future, too few to
rank models on.

Items are the columns a model can score: those rated in the fit period. A validation or test rating of an
item nobody rated before it cannot be recommended by any model compared here; it is dropped from the
relevant set and counted (`dropped_cold_items`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Split:
    """Interaction matrices over one user and item vocabulary (`user_ids[i]`, `item_ids[j]` index them)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    fit: np.ndarray  # users x items, 1.0 where the user rated the item in their fit period
    valid: np.ndarray
    test: np.ndarray
    dropped_cold_items: int


def period_of_rows(frame: pd.DataFrame, valid_share: float, test_share: float) -> pd.Series:
    """0 (fit), 1 (valid) or 2 (test) per rating: each user's newest `test_share` is test, the `valid_share`
    before it validation. Ties in time keep the item order, so the split is deterministic."""
    ordered = frame.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    rank = ordered.groupby("user_id").cumcount().to_numpy()
    count = ordered.groupby("user_id")["item_id"].transform("size").to_numpy()
    # Rounded first: 10 * (1 - 0.2 - 0.1) is 7.000000000000001 in floating point, which ceil makes 8.
    test_from = np.ceil(np.round(count * (1 - test_share), 9))
    valid_from = np.ceil(np.round(count * (1 - test_share - valid_share), 9))
    period = np.where(rank >= test_from, 2, np.where(rank >= valid_from, 1, 0))
    return pd.Series(period, index=ordered.index).reindex(frame.index)


def newest_share(frame: pd.DataFrame, share: float) -> pd.Series:
    """True for each user's newest `share` of ratings (ties in time keep the item order): the future that a model
    built from the rest has not seen."""
    if share <= 0:
        return pd.Series(False, index=frame.index)
    ordered = frame.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    rank = ordered.groupby("user_id").cumcount().to_numpy()
    count = ordered.groupby("user_id")["item_id"].transform("size").to_numpy()
    start = np.ceil(np.round(count * (1 - share), 9))
    return pd.Series(rank >= start, index=ordered.index).reindex(frame.index)


def temporal_split(frame: pd.DataFrame, valid_share: float = 0.1, test_share: float = 0.2) -> Split:
    period = period_of_rows(frame, valid_share, test_share)
    fit_rows = frame[period == 0]
    user_ids = np.sort(fit_rows["user_id"].unique())
    item_ids = np.sort(fit_rows["item_id"].unique())
    users_index, items_index = pd.Index(user_ids), pd.Index(item_ids)
    matrices, dropped = [], 0
    for which in (0, 1, 2):
        rows = frame[period == which]
        users = users_index.get_indexer(rows["user_id"])
        items = items_index.get_indexer(rows["item_id"])
        known = (users >= 0) & (items >= 0)
        dropped += int((~known).sum())
        matrix = np.zeros((len(user_ids), len(item_ids)), dtype=np.float32)
        matrix[users[known], items[known]] = 1.0
        matrices.append(matrix)
    fit, valid, test = matrices
    return Split(user_ids, item_ids, fit, valid, test, dropped_cold_items=dropped)
