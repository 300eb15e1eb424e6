"""Tests of the vectorised handbook features against hand-computed values and a
slow, straightforward pandas reference written the handbook's way."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud_detection.features import FEATURE_NAMES, WINDOWS_DAYS, add_features
from fraud_detection.simulator import SimulatorParams, simulate

DAY = pd.Timedelta(days=1)
SECOND = pd.Timedelta(seconds=1)


def make_frame(rows: list[tuple[object, int, int, float, int]]) -> pd.DataFrame:
    """(datetime, customer, terminal, amount, fraud) rows -> simulator-like frame."""
    df = pd.DataFrame(rows, columns=["tx_datetime", "customer_id", "terminal_id", "tx_amount", "tx_fraud"])
    df["tx_datetime"] = pd.to_datetime(df["tx_datetime"]).astype("datetime64[ns]")
    df.insert(0, "transaction_id", np.arange(len(df), dtype=np.int64))
    return df


def reference_features(df: pd.DataFrame, delay_days: int = 7) -> pd.DataFrame:
    """Handbook implementation: pandas rolling('Nd') per customer and terminal."""
    out = df.copy()
    out["tx_during_weekend"] = (out["tx_datetime"].dt.day_of_week >= 5).astype(float)
    out["tx_during_night"] = (out["tx_datetime"].dt.hour <= 6).astype(float)
    for _, group in df.groupby("customer_id"):
        g = group.sort_values("tx_datetime", kind="stable")
        amount = pd.Series(g["tx_amount"].to_numpy(), index=g["tx_datetime"])
        for n in WINDOWS_DAYS:
            total, count = amount.rolling(f"{n}D").sum(), amount.rolling(f"{n}D").count()
            out.loc[g.index, f"customer_id_nb_tx_{n}day_window"] = count.to_numpy()
            out.loc[g.index, f"customer_id_avg_amount_{n}day_window"] = (total / count).to_numpy()
    for _, group in df.groupby("terminal_id"):
        g = group.sort_values("tx_datetime", kind="stable")
        fraud = pd.Series(g["tx_fraud"].to_numpy(dtype=float), index=g["tx_datetime"])
        fraud_delay = fraud.rolling(f"{delay_days}D").sum()
        count_delay = fraud.rolling(f"{delay_days}D").count()
        for n in WINDOWS_DAYS:
            frauds = fraud.rolling(f"{delay_days + n}D").sum() - fraud_delay
            count = fraud.rolling(f"{delay_days + n}D").count() - count_delay
            out.loc[g.index, f"terminal_id_nb_tx_{n}day_window"] = count.to_numpy()
            out.loc[g.index, f"terminal_id_risk_{n}day_window"] = (frauds / count).fillna(0).to_numpy()
    return out


def assert_features_match(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(
            actual[name].to_numpy(dtype=np.float64),
            expected[name].to_numpy(dtype=np.float64),
            rtol=2e-6,
            atol=1e-5,
            err_msg=name,
        )


def test_feature_names() -> None:
    assert len(FEATURE_NAMES) == 15 == len(set(FEATURE_NAMES))
    assert FEATURE_NAMES[:5] == (
        "tx_amount",
        "tx_during_weekend",
        "tx_during_night",
        "customer_id_nb_tx_1day_window",
        "customer_id_avg_amount_1day_window",
    )
    assert FEATURE_NAMES[-1] == "terminal_id_risk_30day_window"


def test_returns_new_frame_with_columns_in_row_order() -> None:
    df = make_frame([("2018-04-03 10:00", 1, 5, 10.0, 0), ("2018-04-01 10:00", 1, 5, 30.0, 0)])
    before = df.copy()
    out = add_features(df)
    pd.testing.assert_frame_equal(df, before)  # input untouched
    assert list(out.columns) == list(df.columns) + list(FEATURE_NAMES[1:])
    assert out["customer_id_nb_tx_7day_window"].tolist() == [2.0, 1.0]
    assert out["customer_id_avg_amount_7day_window"].tolist() == [20.0, 30.0]


def test_customer_count_includes_current_transaction() -> None:
    out = add_features(make_frame([("2018-04-02 12:00", 3, 1, 42.5, 0)]))
    for n in WINDOWS_DAYS:
        assert out[f"customer_id_nb_tx_{n}day_window"].item() == 1
        assert out[f"customer_id_avg_amount_{n}day_window"].item() == 42.5


@pytest.mark.parametrize("n", WINDOWS_DAYS)
@pytest.mark.parametrize("gap, inside", [(0, True), (1, False)])
def test_customer_window_edges(n: int, gap: int, inside: bool) -> None:
    """A transaction exactly N days earlier is out; N days minus a second is in."""
    first = pd.Timestamp("2018-04-02 10:00:00")
    second = first + n * DAY - SECOND + gap * SECOND
    out = add_features(make_frame([(first, 7, 1, 10.0, 0), (second, 7, 2, 30.0, 0)]))
    last = out.iloc[1]
    assert last[f"customer_id_nb_tx_{n}day_window"] == (2 if inside else 1)
    assert last[f"customer_id_avg_amount_{n}day_window"] == (20.0 if inside else 30.0)


def test_terminal_fraud_within_delay_is_invisible() -> None:
    fraud_at = pd.Timestamp("2018-04-10 09:00:00")
    rows = [(fraud_at, 1, 9, 50.0, 1), (fraud_at + 7 * DAY - SECOND, 2, 9, 10.0, 0)]
    out = add_features(make_frame(rows))
    for n in WINDOWS_DAYS:
        assert out.iloc[1][f"terminal_id_nb_tx_{n}day_window"] == 0
        assert out.iloc[1][f"terminal_id_risk_{n}day_window"] == 0


def test_terminal_fraud_exactly_delay_earlier_is_visible() -> None:
    fraud_at = pd.Timestamp("2018-04-10 09:00:00")
    rows = [
        (fraud_at - 2 * DAY, 4, 9, 20.0, 0),
        (fraud_at, 1, 9, 50.0, 1),
        (fraud_at + 7 * DAY, 2, 9, 10.0, 0),
        (fraud_at + 8 * DAY, 3, 9, 10.0, 0),
    ]
    out = add_features(make_frame(rows))
    exactly_7, exactly_8 = out.iloc[2], out.iloc[3]
    assert exactly_7["terminal_id_nb_tx_1day_window"] == 1
    assert exactly_7["terminal_id_risk_1day_window"] == 1
    assert exactly_7["terminal_id_nb_tx_7day_window"] == 2
    # (t - 8d, t - 7d] excludes t - 8d; the 7-day window (t - 14d, t - 7d] holds
    # the fraud and the genuine transaction two days before it.
    assert exactly_8["terminal_id_nb_tx_1day_window"] == 0
    assert exactly_8["terminal_id_risk_1day_window"] == 0
    assert exactly_8["terminal_id_nb_tx_7day_window"] == 2
    assert exactly_8["terminal_id_risk_7day_window"] == 0.5


def test_terminal_custom_delay() -> None:
    fraud_at = pd.Timestamp("2018-04-10 09:00:00")
    out = add_features(
        make_frame([(fraud_at, 1, 9, 50.0, 1), (fraud_at + 2 * DAY, 2, 9, 1.0, 0)]), delay_days=2
    )
    assert out.iloc[1]["terminal_id_risk_1day_window"] == 1


def test_calendar_flags() -> None:
    rows = [
        ("2018-04-01 06:59:59", 1, 1, 1.0, 0),  # Sunday, night
        ("2018-04-02 07:00:00", 1, 1, 1.0, 0),  # Monday, day
        ("2018-04-07 23:00:00", 1, 1, 1.0, 0),  # Saturday, evening
        ("2018-04-06 00:00:00", 1, 1, 1.0, 0),
    ]  # Friday, midnight
    out = add_features(make_frame(rows))
    assert out["tx_during_weekend"].tolist() == [1, 0, 1, 0]
    assert out["tx_during_night"].tolist() == [1, 0, 0, 1]


def test_same_timestamp_counts_like_pandas_rolling() -> None:
    at = pd.Timestamp("2018-04-05 12:00:00")
    df = make_frame([(at, 1, 1, 10.0, 0), (at, 1, 1, 20.0, 0)])
    out = add_features(df)
    assert out["customer_id_nb_tx_1day_window"].tolist() == [1, 2]
    assert_features_match(out, reference_features(df))


def test_row_permutation_invariance() -> None:
    df = simulate(SimulatorParams(customers=40, terminals=80, days=20, seed=4))
    shuffled = df.sample(frac=1.0, random_state=0)
    out = add_features(shuffled).sort_values("transaction_id")
    assert_features_match(out.reset_index(drop=True), add_features(df))


def test_equivalent_to_handbook_reference_on_simulated_frame() -> None:
    df = simulate(SimulatorParams(customers=120, terminals=240, days=60, seed=11))
    assert df["tx_fraud"].sum() > 100
    assert_features_match(add_features(df), reference_features(df))


def test_sub_second_timestamps() -> None:
    at = pd.Timestamp("2018-04-05 12:00:00.250")
    df = make_frame(
        [
            (at, 1, 1, 10.0, 1),
            (at + DAY, 1, 1, 20.0, 0),
            (at + 8 * DAY - pd.Timedelta(milliseconds=1), 1, 1, 5.0, 0),
        ]
    )
    assert_features_match(add_features(df), reference_features(df))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.tuples(
            st.integers(0, 40 * 86_400),
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(1, 500),
            st.booleans(),
        ),
        min_size=1,
        max_size=60,
    ),
    delay=st.integers(1, 9),
)
def test_equivalent_to_reference_on_random_frames(
    data: list[tuple[int, int, int, int, bool]], delay: int
) -> None:
    # Times on a coarse grid create many ties and exact window edges.
    origin = pd.Timestamp("2018-04-01")
    rows = [
        (origin + pd.Timedelta(seconds=(s // 21_600) * 21_600), c, t, a / 4, int(f)) for s, c, t, a, f in data
    ]
    df = make_frame(rows).sort_values("tx_datetime", kind="stable")
    assert_features_match(add_features(df, delay), reference_features(df, delay))


@pytest.mark.parametrize("delay", [0, -1, 1.5, True])
def test_rejects_bad_delay(delay: object) -> None:
    with pytest.raises(ValueError, match="delay_days"):
        add_features(make_frame([("2018-04-01", 1, 1, 1.0, 0)]), delay)  # type: ignore[arg-type]


def test_rejects_missing_columns_and_times() -> None:
    df = make_frame([("2018-04-01", 1, 1, 1.0, 0)])
    with pytest.raises(ValueError, match="tx_fraud"):
        add_features(df.drop(columns="tx_fraud"))
    df.loc[0, "tx_datetime"] = pd.NaT
    with pytest.raises(ValueError, match="missing"):
        add_features(df)


def test_empty_frame() -> None:
    out = add_features(make_frame([]))
    assert len(out) == 0 and set(FEATURE_NAMES) <= set(out.columns)
