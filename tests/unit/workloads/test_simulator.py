"""Statistical and contract tests of the fraud_detection transaction simulator."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fraud_detection.simulator import (
    COLUMNS,
    SECONDS_PER_DAY,
    SimulatorParams,
    layout,
    simulate,
    terminals_in_radius,
)

SMALL = SimulatorParams(customers=300, terminals=600, days=40)


def replace(params: SimulatorParams, **changes: object) -> SimulatorParams:
    """A validated copy with `changes` (model_copy would skip validation)."""
    return SimulatorParams.model_validate({**params.model_dump(), **changes})


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return simulate(SMALL)


def test_columns_dtypes_and_order(small: pd.DataFrame) -> None:
    assert tuple(small.columns) == COLUMNS
    assert small["transaction_id"].to_list() == list(range(len(small)))
    assert small["tx_datetime"].dtype == np.dtype("datetime64[ns]")
    assert small["tx_amount"].dtype == np.float64
    assert small["tx_time_seconds"].dtype == np.int64
    assert small["tx_fraud"].dtype == np.int8
    assert small["tx_fraud_scenario"].dtype == np.int8
    assert small["customer_id"].dtype.kind == "i" and small["terminal_id"].dtype.kind == "i"
    assert small["tx_time_seconds"].is_monotonic_increasing


def test_transaction_count_is_plausible(small: pd.DataFrame) -> None:
    # 300 customers x 40 days x E[U(0, 4)] = 2 per day x P(time inside the day) ~ 0.969
    assert 20_000 < len(small) < 26_500


def test_times_inside_the_day_and_consistent(small: pd.DataFrame) -> None:
    seconds = small["tx_time_seconds"].to_numpy()
    days = small["tx_time_days"].to_numpy()
    in_day = seconds - days.astype(np.int64) * SECONDS_PER_DAY
    assert in_day.min() > 0 and in_day.max() < SECONDS_PER_DAY
    assert days.min() >= 0 and days.max() < SMALL.days
    expected = pd.Timestamp(SMALL.start_date) + pd.to_timedelta(seconds, unit="s")
    assert (small["tx_datetime"].to_numpy() == expected.to_numpy()).all()


def test_times_are_centred_on_noon(small: pd.DataFrame) -> None:
    in_day = small["tx_time_seconds"] % SECONDS_PER_DAY
    assert abs(in_day.mean() - SECONDS_PER_DAY / 2) < 600
    assert 17_500 < in_day.std() < 20_000  # N(43200, 20000) truncated to the day


def test_amounts_non_negative_and_in_cents(small: pd.DataFrame) -> None:
    amount = small["tx_amount"].to_numpy()
    assert amount.min() >= 0
    assert np.allclose(amount, np.round(amount, 2), atol=1e-9, rtol=0)


def test_ids_in_range(small: pd.DataFrame) -> None:
    assert small["customer_id"].between(0, SMALL.customers - 1).all()
    assert small["terminal_id"].between(0, SMALL.terminals - 1).all()


def test_fraud_ratio_plausible(small: pd.DataFrame) -> None:
    # Small populations with the default per-day compromise rates: about 6 %
    # scenario 2 and 4 % scenario 3 (the defaults give ~0.8 % at full size).
    assert set(small["tx_fraud"].unique()) <= {0, 1}
    assert ((small["tx_fraud"] == 1) == (small["tx_fraud_scenario"] > 0)).all()
    assert 0.06 < small["tx_fraud"].mean() < 0.15


def test_scenario_1_is_exactly_the_amounts_above_threshold(small: pd.DataFrame) -> None:
    above = small["tx_amount"] > SMALL.fraud_amount_threshold
    assert (small.loc[small["tx_fraud_scenario"] == 1, "tx_amount"] > 220).all()
    assert (small.loc[above, "tx_fraud"] == 1).all()
    assert (small["tx_fraud_scenario"] == 1).sum() > 0


def test_scenario_2_counts_and_whole_terminal_days(small: pd.DataFrame) -> None:
    s2 = small[small["tx_fraud_scenario"] == 2]
    # 2 terminals/day, windows of min(28, 40 - d) days: ~1480 terminal-days
    # at ~0.97 transactions per terminal-day.
    assert 900 < len(s2) < 2_100
    assert s2["terminal_id"].nunique() <= 2 * SMALL.days
    hit_days = s2[["terminal_id", "tx_time_days"]].drop_duplicates()
    same_days = small.merge(hit_days, on=["terminal_id", "tx_time_days"])
    assert (same_days["tx_fraud"] == 1).all()  # the whole terminal-day is fraudulent


def test_scenario_3_counts_share_and_multiplier(small: pd.DataFrame) -> None:
    s3 = small[small["tx_fraud_scenario"] == 3]
    # 3 customers/day, windows of min(14, 40 - d) days: ~1400 customer-days x
    # ~1.94 transactions, a third of which are fraudulent.
    assert 550 < len(s3) < 1_300
    assert s3["customer_id"].nunique() <= 3 * SMALL.days
    victims = small[small["customer_id"].isin(s3["customer_id"])]
    genuine = victims[victims["tx_fraud"] == 0]
    ratio = s3["tx_amount"].mean() / genuine["tx_amount"].mean()
    assert 4.0 < ratio < 6.0


def test_all_scenarios_present_at_defaults_scaled_down() -> None:
    df = simulate(SimulatorParams(customers=1_000, terminals=2_000, days=60, seed=3))
    assert set(df["tx_fraud_scenario"].unique()) == {0, 1, 2, 3}


def test_deterministic_for_a_seed(small: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(simulate(SMALL), small)
    other = simulate(replace(SMALL, seed=1))
    assert len(other) != len(small) or not other.equals(small)


def test_fraud_knobs_leave_genuine_draws_alone(small: pd.DataFrame) -> None:
    quiet = simulate(
        replace(
            SMALL, compromised_terminals_per_day=0, customer_fraud_share=0.0, fraud_amount_threshold=math.inf
        )
    )
    assert quiet["tx_fraud"].sum() == 0
    cols = ["customer_id", "terminal_id", "tx_time_seconds"]
    pd.testing.assert_frame_equal(quiet[cols], small[cols])
    genuine = small["tx_fraud_scenario"] != 3
    assert np.array_equal(quiet.loc[genuine, "tx_amount"], small.loc[genuine, "tx_amount"])


def test_scenario_rate_knobs_change_fraud_counts(small: pd.DataFrame) -> None:
    more = simulate(
        replace(SMALL, compromised_terminals_per_day=6, compromised_customers_per_day=9)
    )
    assert (more["tx_fraud_scenario"] == 2).sum() > 1.5 * (small["tx_fraud_scenario"] == 2).sum()
    assert (more["tx_fraud_scenario"] == 3).sum() > 1.5 * (small["tx_fraud_scenario"] == 3).sum()


def test_amount_drift_knobs_shift_and_scale(small: pd.DataFrame) -> None:
    base = small.loc[small["tx_fraud"] == 0, "tx_amount"]
    scaled = simulate(replace(SMALL, amount_scale=2.0, fraud_amount_threshold=math.inf))
    shifted = simulate(replace(SMALL, amount_shift=30.0, fraud_amount_threshold=math.inf))
    scaled_g = scaled.loc[scaled["tx_fraud"] == 0, "tx_amount"]
    shifted_g = shifted.loc[shifted["tx_fraud"] == 0, "tx_amount"]
    assert 1.9 < scaled_g.mean() / base.mean() < 2.1
    assert 1.9 < scaled_g.std() / base.std() < 2.1
    assert 28 < shifted_g.mean() - base.mean() < 32
    assert abs(shifted_g.std() - base.std()) < 0.05 * base.std()


def test_customer_without_terminal_in_radius_makes_no_transactions() -> None:
    params = SimulatorParams(
        customers=200,
        terminals=20,
        days=20,
        radius=3.0,
        compromised_terminals_per_day=0,
        compromised_customers_per_day=0,
    )
    df = simulate(params)
    world = layout(params)
    indptr, indices = world.indptr, world.indices
    lonely = np.flatnonzero(np.diff(indptr) == 0)
    assert len(lonely) > 100  # the scenario is really exercised
    assert not df["customer_id"].isin(lonely).any()
    for c, t in df[["customer_id", "terminal_id"]].drop_duplicates().itertuples(index=False):
        assert t in indices[indptr[c] : indptr[c + 1]]


def test_layout_profiles_follow_the_handbook() -> None:
    world = layout(SimulatorParams(customers=20_000, terminals=10, amount_scale=1.0))
    base = world.mean_amount
    assert base.min() >= 5 and base.max() <= 100 and abs(base.mean() - 52.5) < 1
    assert np.allclose(world.std_amount, base / 2)
    assert world.tx_per_day.min() >= 0 and world.tx_per_day.max() <= 4
    assert world.customer_xy.min() >= 0 and world.customer_xy.max() <= 100
    drifted = layout(SimulatorParams(customers=20_000, terminals=10, amount_scale=2.0, amount_shift=3.0))
    assert np.allclose(drifted.mean_amount, 2 * base + 3)
    assert np.allclose(drifted.std_amount, base)


def test_terminals_in_radius_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    customer_xy, terminal_xy = rng.uniform(0, 100, (600, 2)), rng.uniform(0, 100, (300, 2))
    indptr, indices = terminals_in_radius(customer_xy, terminal_xy, 12.0)
    for c in range(len(customer_xy)):
        dist = np.sqrt(((terminal_xy - customer_xy[c]) ** 2).sum(axis=1))
        assert indices[indptr[c] : indptr[c + 1]].tolist() == np.flatnonzero(dist < 12.0).tolist()


def test_validate_round_trip_and_coercions() -> None:
    params = SimulatorParams.model_validate({"customers": 10, "radius": 3, "start_date": "2020-01-02"})
    assert params == SimulatorParams(customers=10, radius=3.0, start_date="2020-01-02")
    assert isinstance(params.radius, float)
    assert SimulatorParams.model_validate(SMALL.model_dump()) == SMALL


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="custmers"):
        SimulatorParams.model_validate({"custmers": 10})


@pytest.mark.parametrize(
    "mapping, field, message",
    [
        ({"customers": -1}, "customers", "greater than or equal to 1"),
        ({"customers": 10_000_000}, "customers", "less than or equal to"),
        ({"compromised_terminals_per_day": -2}, "compromised_terminals_per_day", "greater than or equal to 0"),
        ({"customers": 2.5}, "customers", "valid integer"),
        ({"customers": True}, "customers", "valid integer"),
        ({"customers": "5000"}, "customers", "valid integer"),
        ({"radius": "5"}, "radius", "valid number"),
        ({"radius": 0.0}, "radius", "greater than 0"),
        ({"radius": math.inf}, "radius", "finite"),
        ({"fraud_amount_threshold": math.nan}, "fraud_amount_threshold", "greater than or equal to 0"),
        ({"customer_fraud_share": 1.5}, "customer_fraud_share", "less than or equal to 1"),
        ({"amount_scale": 0}, "amount_scale", "greater than 0"),
        ({"amount_shift": -10.0}, "amount_shift", "mean amount > 0"),
        ({"start_date": "April 1st"}, "start_date", "pattern"),
        ({"start_date": "2018-02-30"}, "start_date", "not a calendar date"),
        ({"terminals": 3, "compromised_terminals_per_day": 4}, "compromised_terminals_per_day", "<= terminals (3)"),
        ({"customers": 2, "compromised_customers_per_day": 4}, "compromised_customers_per_day", "<= customers (2)"),
        ({"customers": 2}, "compromised_customers_per_day", "<= customers (2)"),  # against the default of 3
        ({"terminals": 1}, "compromised_terminals_per_day", "<= terminals (1)"),
    ],
)
def test_bad_values_are_refused_with_their_field(mapping: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        SimulatorParams.model_validate(mapping)
    [error] = raised.value.errors()
    assert error["loc"] == (field,) and message in error["msg"], error


def test_params_are_frozen_and_validated_directly() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        SMALL.customers = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="days"):
        SimulatorParams(days=0)
    assert math.isinf(SimulatorParams(fraud_amount_threshold=math.inf).fraud_amount_threshold)
