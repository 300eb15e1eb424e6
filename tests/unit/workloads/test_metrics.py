"""Tests of the handbook train/delay/test protocol and the detection metrics."""

from __future__ import annotations

import datetime as dt
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fraud_detection.metrics import average_precision, card_precision_top_k, evaluate_scores, roc_auc, train_test_split
from fraud_detection.simulator import SimulatorParams, simulate


def tx_frame(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    """(datetime, customer, fraud) rows -> minimal transaction frame."""
    df = pd.DataFrame(rows, columns=["tx_datetime", "customer_id", "tx_fraud"])
    df["tx_datetime"] = pd.to_datetime(df["tx_datetime"]).astype("datetime64[ns]")
    df.insert(0, "transaction_id", np.arange(len(df), dtype=np.int64))
    return df


# ---------------------------------------------------------------- card precision

CARD_ROWS = [  # (datetime, card, fraud, score)
    ("2018-05-01 10:00", 1, 0, 0.9),
    ("2018-05-01 11:00", 1, 1, 0.1),
    ("2018-05-01 12:00", 2, 0, 0.8),
    ("2018-05-01 13:00", 3, 1, 0.7),
    ("2018-05-02 10:00", 1, 1, 0.95),
    ("2018-05-02 11:00", 2, 0, 0.5),
    ("2018-05-02 12:00", 3, 1, 0.6),
    ("2018-05-02 13:00", 4, 1, 0.4),
    ("2018-05-03 10:00", 3, 1, 0.99),
    ("2018-05-03 11:00", 4, 1, 0.3),
    ("2018-05-03 12:00", 5, 1, 0.35),
]


def card_case() -> tuple[pd.DataFrame, np.ndarray]:
    df = tx_frame([(t, c, f) for t, c, f, _ in CARD_ROWS])
    return df, np.array([s for *_, s in CARD_ROWS])


def test_card_precision_removes_cards_detected_earlier() -> None:
    # Day 1: top-2 cards by max score are 1 (0.9, has a fraud) and 2 (0.8, no
    #        fraud) -> 1/2; card 1 is detected.
    # Day 2: card 1 is blocked; top-2 are 3 (fraud) and 2 -> 1/2; card 3 detected.
    # Day 3: card 3 is blocked; top-2 are 5 and 4, both frauds -> 2/2.
    df, scores = card_case()
    assert card_precision_top_k(df, scores, k=2) == pytest.approx((0.5 + 0.5 + 1.0) / 3)


def test_card_precision_without_removal_would_differ() -> None:
    # Sanity check of the case above: had card 1 stayed, day 2 would score 1.0.
    df, scores = card_case()
    day2 = df["tx_datetime"].dt.day == 2
    assert card_precision_top_k(df[day2], scores[day2.to_numpy()], k=2) == 1.0


def test_card_precision_divides_by_k_and_breaks_ties_by_card() -> None:
    df = tx_frame([("2018-05-01 10:00", 8, 1), ("2018-05-01 11:00", 3, 0), ("2018-05-01 12:00", 5, 1)])
    assert card_precision_top_k(df, [0.5, 0.5, 0.1], k=3) == pytest.approx(2 / 3)
    # Tie at 0.5 between cards 3 and 8: card 3 (no fraud) is ranked first.
    assert card_precision_top_k(df, [0.5, 0.5, 0.1], k=1) == 0.0
    assert card_precision_top_k(df, [0.5, 0.4, 0.1], k=1) == 1.0


def test_card_precision_uses_max_score_per_card() -> None:
    df = tx_frame([("2018-05-01 10:00", 1, 0), ("2018-05-01 11:00", 1, 1), ("2018-05-01 12:00", 2, 0)])
    assert card_precision_top_k(df, [0.9, 0.0, 0.5], k=1) == 1.0


def test_card_precision_empty_frame_is_nan() -> None:
    assert math.isnan(card_precision_top_k(tx_frame([]), [], k=5))


# ------------------------------------------------------------------ evaluate


def test_evaluate_scores_matches_sklearn() -> None:
    df = simulate(SimulatorParams(customers=100, terminals=200, days=10, seed=2))
    scores = np.random.default_rng(0).random(len(df)) + df["tx_fraud"].to_numpy() * 0.3
    result = evaluate_scores(df, scores, k=50)
    assert set(result) == {"auc_roc", "average_precision", "card_precision_at_50"}
    assert result["auc_roc"] == pytest.approx(roc_auc_score(df["tx_fraud"], scores))
    assert result["average_precision"] == pytest.approx(average_precision_score(df["tx_fraud"], scores))
    assert result["card_precision_at_50"] == pytest.approx(card_precision_top_k(df, scores, 50))


@pytest.mark.parametrize("seed", range(6))
def test_numpy_ranking_metrics_equal_sklearn_with_and_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(2, 3000))
    labels = (rng.random(rows) < rng.uniform(0.01, 0.5)).astype(np.int8)
    labels[:2] = (0, 1)  # both classes, as the callers guarantee
    scores = rng.random(rows) + labels * rng.uniform(0, 1)
    if seed % 2:  # coarse scores: many ties, inside and across the classes (a float32 model output does this)
        scores = np.round(scores, 1).astype(np.float32)
    assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores), rel=1e-12)
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_numpy_ranking_metrics_refuse_non_finite_scores_as_sklearn_does(bad: float) -> None:
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, bad, 0.8, 0.1])
    for metric in (average_precision, roc_auc, average_precision_score, roc_auc_score):
        with pytest.raises(ValueError, match=r"(?i)nan|infinity"):
            metric(labels, scores)


def test_numpy_ranking_metrics_hand_case() -> None:
    # ranked 0.9 (fraud), 0.8 (not), 0.8 (fraud), 0.1 (not): the tie at 0.8 is one step of precision 2/3
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.8, 0.1])
    assert average_precision(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert roc_auc(labels, scores) == pytest.approx((1 + 0.5 + 1 + 1) / 4)


def test_evaluate_scores_hand_case_default_k() -> None:
    df, scores = card_case()
    result = evaluate_scores(df, scores)
    assert list(result) == ["auc_roc", "average_precision", "card_precision_at_100"]
    # k = 100 > cards: every card is in the top k.  Day 1 detects cards 1 and
    # 3; day 2 then only card 4; day 3 only card 5 (3 and 4 are blocked).
    assert result["card_precision_at_100"] == pytest.approx((2 + 1 + 1) / 100 / 3)


def test_evaluate_scores_single_class_gives_nan_without_warning() -> None:
    df = tx_frame([("2018-05-01 10:00", 1, 0), ("2018-05-02 10:00", 2, 0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate_scores(df, [0.2, 0.4], k=10)
    assert math.isnan(result["auc_roc"]) and math.isnan(result["average_precision"])
    assert result["card_precision_at_10"] == 0.0


@pytest.mark.parametrize("scores", [[0.1], [0.1, np.nan]])
def test_scores_are_validated(scores: list[float]) -> None:
    df = tx_frame([("2018-05-01 10:00", 1, 0), ("2018-05-02 10:00", 2, 1)])
    with pytest.raises(ValueError, match="scores"):
        evaluate_scores(df, scores)


# ---------------------------------------------------------------------- split


def split_case() -> pd.DataFrame:
    """Five customers, one noon transaction a day from 2018-04-01 to 04-30."""
    fraud_days = {1: "2018-04-07", 2: "2018-04-13", 3: "2018-04-20", 4: "2018-04-02"}
    rows = []
    for day in pd.date_range("2018-04-01", "2018-04-30"):
        for customer in range(1, 6):
            is_fraud = fraud_days.get(customer) == str(day.date())
            rows.append((f"{day.date()} 12:00", customer, int(is_fraud)))
    return tx_frame(rows)


def test_split_windows_and_removal_of_known_compromised_cards() -> None:
    df = split_case()
    train, test = train_test_split(df, "2018-04-05")
    assert train["tx_datetime"].min() == pd.Timestamp("2018-04-05 12:00")
    assert train["tx_datetime"].max() == pd.Timestamp("2018-04-11 12:00")
    assert len(train) == 5 * 7
    # Test days 04-19 .. 04-25 (offsets 14 .. 20 from the training start).
    assert test["tx_datetime"].min() >= pd.Timestamp("2018-04-19")
    assert test["tx_datetime"].max() < pd.Timestamp("2018-04-26")
    days_by_customer = (
        test.groupby("customer_id")["tx_datetime"].apply(lambda s: sorted(s.dt.day.tolist())).to_dict()
    )
    assert 1 not in days_by_customer  # fraud in the training set: known from the start
    # Fraud on 04-13 (offset 8) is known on test day t once 8 <= t - 8, i.e. from 04-21.
    assert days_by_customer[2] == [19, 20]
    assert days_by_customer[3] == list(range(19, 26))  # its fraud (04-20) is not known yet
    assert days_by_customer[4] == list(range(19, 26))  # fraud before training start
    assert days_by_customer[5] == list(range(19, 26))
    assert test["transaction_id"].is_monotonic_increasing


def test_split_accepts_dates_and_custom_lengths() -> None:
    df = split_case()
    train, test = train_test_split(df, dt.date(2018, 4, 5), train_days=3, delay_days=2, test_days=2)
    assert sorted(train["tx_datetime"].dt.day.unique()) == [5, 6, 7]
    assert sorted(test["tx_datetime"].dt.day.unique()) == [10, 11]
    assert 1 not in set(test["customer_id"])
    same = train_test_split(df, pd.Timestamp("2018-04-05"), 3, 2, 2)
    pd.testing.assert_frame_equal(same[1], test)


def handbook_split(
    df: pd.DataFrame, start: pd.Timestamp, delta_train: int = 7, delta_delay: int = 7, delta_test: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The handbook's get_train_test_set, on tx_time_days."""
    train_df = df[(df.tx_datetime >= start) & (df.tx_datetime < start + pd.Timedelta(days=delta_train))]
    known = set(train_df[train_df.tx_fraud == 1].customer_id)
    first_day = train_df.tx_time_days.min()
    test_parts = []
    for day in range(delta_test):
        test_day = df[df.tx_time_days == first_day + delta_train + delta_delay + day]
        delay_day = df[df.tx_time_days == first_day + delta_train + day - 1]
        known |= set(delay_day[delay_day.tx_fraud == 1].customer_id)
        test_parts.append(test_day[~test_day.customer_id.isin(known)])
    return train_df.sort_values("transaction_id"), pd.concat(test_parts).sort_values("transaction_id")


def test_split_matches_handbook_on_simulated_data() -> None:
    df = simulate(SimulatorParams(customers=200, terminals=400, days=60, seed=5))
    start = pd.Timestamp("2018-04-20")
    train, test = train_test_split(df, start)
    ref_train, ref_test = handbook_split(df, start)
    assert train["transaction_id"].tolist() == ref_train["transaction_id"].tolist()
    assert test["transaction_id"].tolist() == ref_test["transaction_id"].tolist()
    assert len(test) < len(df[df.tx_time_days.between(33, 39)])  # cards were removed


@pytest.mark.parametrize("kwargs", [{"train_days": 0}, {"delay_days": -1}, {"test_days": 1.5}])
def test_split_rejects_bad_lengths(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        train_test_split(split_case(), "2018-04-05", **kwargs)  # type: ignore[arg-type]


def test_training_rows_from_the_log_split_like_the_simulated_ones() -> None:
    """Logged ids are strings ("10" sorts before "9"): rows read back from the log split into the same sets in
    the same (time) order as the frame they were served from."""
    from fraud_detection.workload import FraudDetectionWorkload

    workload = FraudDetectionWorkload()
    frame = simulate(SimulatorParams(customers=60, terminals=120, days=20, seed=4))
    requests, labels = workload.raw_history(frame)
    logged = requests.merge(labels, on="transaction_id").sample(frac=1.0, random_state=0)  # log order is not time
    rows = workload.history_from_log(logged)
    assert rows["tx_fraud"].sum() == frame["tx_fraud"].sum()
    assert not pd.api.types.is_integer_dtype(rows["transaction_id"])
    for simulated, read_back in zip(train_test_split(frame, "2018-04-03", 5, 3, 4),
                                    train_test_split(rows, "2018-04-03", 5, 3, 4), strict=True):
        assert read_back["transaction_id"].tolist() == simulated["transaction_id"].astype(str).tolist()
        assert read_back["tx_fraud"].tolist() == simulated["tx_fraud"].tolist()
