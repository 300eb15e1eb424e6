"""Handbook validation protocol (train/delay/test split) and detection metrics.

Follows "Reproducible Machine Learning for Credit Card Fraud Detection"
(Le Borgne et al.), chapters 3.5 and 4.2: fraud labels are only known after a
delay, investigators can check about k cards a day, and a card known to be
compromised is blocked, so it must neither be scored again in the test set nor
count twice in the card precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

DateLike = str | date  # pd.Timestamp and datetime are dates too
_NS_PER_DAY = 86_400 * 10**9


def train_test_split(
    df: pd.DataFrame, train_start: DateLike, train_days: int = 7, delay_days: int = 7, test_days: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``df`` like the handbook's ``get_train_test_set``.

    Days are counted from ``train_start`` (``day = floor((tx_datetime -
    train_start) / 1 day)``, so calendar days when ``train_start`` is a date):

    * training set: the transactions of days ``[0, train_days)``;
    * test set: the transactions of days ``[train_days + delay_days,
      train_days + delay_days + test_days)``, except that a transaction on test
      day ``t`` is dropped when its customer had a fraud (``tx_fraud == 1``) on
      some day ``d`` with ``0 <= d <= t - delay_days - 1``.  That is the
      handbook's set of known compromised cards: the frauds of the training
      set plus those of the days after it that are at least ``delay_days + 1``
      days older than ``t`` (their labels are known by then), so the set grows
      by one day per test day.  Frauds before ``train_start`` are ignored.

    The delay period itself is in neither set.  Both frames are copies in
    ``transaction_id`` order when ids are integers (the simulator's count in
    time order), in ``tx_datetime`` order otherwise (frame order when there
    are no ids).
    """
    _check_int("train_days", train_days, 1)
    _check_int("delay_days", delay_days, 0)
    _check_int("test_days", test_days, 1)
    day = _days_since(df["tx_datetime"], pd.Timestamp(train_start))
    train = (day >= 0) & (day < train_days)
    first_test = train_days + delay_days
    test = (day >= first_test) & (day < first_test + test_days)
    known_since = _first_fraud_day(df, day)
    test &= ~(known_since <= day - delay_days - 1)
    return _ordered(df[train]), _ordered(df[test])


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _days_since(column: pd.Series, origin: pd.Timestamp) -> np.ndarray:
    """Whole days (floored) from ``origin`` to each timestamp."""
    ns = column.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return np.floor_divide(ns - origin.as_unit("ns").value, _NS_PER_DAY)


def _first_fraud_day(df: pd.DataFrame, day: np.ndarray) -> np.ndarray:
    """Per row: first day >= 0 on which its customer had a fraud, else +inf."""
    customer = df["customer_id"].to_numpy()
    fraud = (df["tx_fraud"].to_numpy() == 1) & (day >= 0)
    first = pd.Series(day[fraud]).groupby(customer[fraud]).min()
    mapped = pd.Series(customer).map(first).to_numpy(dtype=np.float64)
    return np.where(np.isnan(mapped), np.inf, mapped)


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    if "transaction_id" not in df.columns:
        return df.copy()
    if pd.api.types.is_integer_dtype(df["transaction_id"]):  # the simulator's ids count in time order
        return df.sort_values("transaction_id", kind="stable").copy()
    # Ids from a log are strings ("10" sorts before "9"): time order, the id breaking ties.
    return df.sort_values(["tx_datetime", "transaction_id"], kind="stable").copy()


def card_precision_top_k(df: pd.DataFrame, scores: ArrayLike, k: int = 100) -> float:
    """Mean daily card precision at ``k``, with removal of detected cards.

    For each calendar day of ``tx_datetime`` (ascending): drop the cards
    (``customer_id``) detected on earlier days, score each remaining card by
    its maximum transaction score of the day, take the ``k`` best cards (ties:
    lower ``customer_id`` first) and count those with a fraud that day.  The
    day's precision is that count divided by ``k`` (as in the handbook, also
    when fewer than ``k`` cards transacted); the cards counted are "detected"
    and removed from later days, since a blocked card cannot be detected again.
    Returns the mean over days, NaN for an empty frame.
    """
    _check_int("k", k, 1)
    values = _scores(df, scores)
    frame = pd.DataFrame(
        {
            "day": df["tx_datetime"].to_numpy(dtype="datetime64[D]"),
            "card": df["customer_id"].to_numpy(),
            "fraud": df["tx_fraud"].to_numpy() == 1,
            "score": values,
        }
    )
    detected: set[object] = set()
    precisions = []
    for _, day_rows in frame.groupby("day", sort=True):
        day_rows = day_rows[~day_rows["card"].isin(list(detected))]
        hits = _top_k_fraud_cards(day_rows, k)
        precisions.append(len(hits) / k)
        detected.update(hits)
    return float(np.mean(precisions)) if precisions else math.nan


def _top_k_fraud_cards(day_rows: pd.DataFrame, k: int) -> list[object]:
    """Cards among the day's top ``k`` (by max score) that had a fraud."""
    cards = day_rows.groupby("card", sort=True).agg(score=("score", "max"), fraud=("fraud", "max"))
    top = cards.sort_values("score", ascending=False, kind="stable").head(k)
    return list(top.index[top["fraud"].to_numpy(dtype=bool)])


def _scores(df: pd.DataFrame, scores: ArrayLike) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(values) != len(df):
        raise ValueError(f"scores has {len(values)} values for {len(df)} transactions")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    return values


def _ranked_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives above each distinct score, highest first (scikit-learn's _binary_clf_curve)."""
    if not np.isfinite(scores).all():  # as scikit-learn: a diverged model's NaN must fail, not rank somewhere
        raise ValueError("scores contain NaN or infinity")
    order = np.argsort(scores, kind="mergesort")[::-1]
    ranked_scores, ranked_labels = scores[order], labels[order].astype(np.float64)
    last_of_each_score = np.r_[np.flatnonzero(np.diff(ranked_scores)), len(ranked_scores) - 1]
    true_positives = np.cumsum(ranked_labels)[last_of_each_score]
    return true_positives, last_of_each_score + 1 - true_positives


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """scikit-learn's average_precision_score (Σ (R_n − R_n−1) P_n over the distinct scores, ties in one step).

    Ours, in numpy, because importing sklearn.metrics (with scipy) costs every new Ray Tune trial and Train
    worker process about 0.5 s before its first epoch is scored; tests hold it equal to scikit-learn's."""
    true_positives, false_positives = _ranked_counts(np.asarray(labels), np.asarray(scores))
    precision = true_positives / (true_positives + false_positives)
    recall_gain = np.diff(true_positives, prepend=0.0) / true_positives[-1]
    return float(np.sum(recall_gain * precision))


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """scikit-learn's roc_auc_score for binary labels: the trapezoid under the ROC curve (a tie counts half)."""
    true_positives, false_positives = _ranked_counts(np.asarray(labels), np.asarray(scores))
    tpr = np.r_[0.0, true_positives / true_positives[-1]]
    fpr = np.r_[0.0, false_positives / false_positives[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def evaluate_scores(df: pd.DataFrame, scores: ArrayLike, k: int = 100) -> dict[str, float]:
    """AUC ROC, average precision and card precision at ``k`` of ``scores``.

    AUC and AP are undefined when the test set holds a single class (a quiet
    week can have no fraud left after the removal of known compromised
    cards); they are NaN then instead of an exception, so one empty fold does
    not abort a whole evaluation run.
    """
    values = _scores(df, scores)
    labels = (df["tx_fraud"].to_numpy() == 1).astype(np.int8)
    if len(np.unique(labels)) < 2:
        auc, ap = math.nan, math.nan
    else:
        auc, ap = roc_auc(labels, values), average_precision(labels, values)
    return {
        "auc_roc": auc,
        "average_precision": ap,
        f"card_precision_at_{k}": card_precision_top_k(df, values, k),
    }


def evaluate_named(df: pd.DataFrame, scores: ArrayLike, names: Sequence[str], k: int = 100) -> dict[str, float]:
    """Only the metrics ``names`` of ``evaluate_scores`` (a rollout's paired bootstrap computes them hundreds
    of times: card precision is ~10x the cost of average precision, so it runs only when asked for)."""
    known = ("auc_roc", "average_precision", f"card_precision_at_{k}")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(known)}")
    values = _scores(df, scores)
    labels = (df["tx_fraud"].to_numpy() == 1).astype(np.int8)
    single_class = len(np.unique(labels)) < 2
    found: dict[str, float] = {}
    for name in names:
        if name == known[2]:
            found[name] = card_precision_top_k(df, values, k)
        elif single_class:
            found[name] = math.nan
        else:
            found[name] = (roc_auc if name == "auc_roc" else average_precision)(labels, values)
    return found
