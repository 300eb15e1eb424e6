"""Vectorised transaction simulator for the ``fraud_detection`` workload.

Re-implements the generator of the handbook "Reproducible Machine Learning for
Credit Card Fraud Detection" (Le Borgne et al., chapter 3.2) without Python
loops over customers or transactions, so that the default dataset (~1.75 M
transactions, ~0.8 % fraud) is generated in seconds instead of minutes.

Departures from the handbook, all deliberate:

* randomness comes from one ``numpy.random.Generator`` per concern (profiles,
  terminals, transactions, scenario 2, scenario 3), spawned from
  ``SeedSequence(seed)``.  Changing a fraud knob therefore leaves the genuine
  transactions untouched, which is what drift experiments need;
* genuine amounts are drawn as ``mean + std * z`` from standard normals, so
  the drift knobs ``amount_scale`` / ``amount_shift`` move the same draws;
* compromises are started on every simulated day (the handbook skips the last
  day), and the scenario-3 amounts are rounded to cents again after scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

GRID_SIZE = 100.0
SECONDS_PER_DAY = 86_400
_TIME_MEAN = SECONDS_PER_DAY / 2
_TIME_STD = 20_000.0
_AMOUNT_MEAN_RANGE = (5.0, 100.0)
_TX_PER_DAY_RANGE = (0.0, 4.0)
_DISTANCE_BLOCK = 256  # customers per block of the brute-force distance matrix

COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "tx_time_seconds",
    "tx_time_days",
    "tx_fraud",
    "tx_fraud_scenario",
)


# Upper bounds keep a typo (an extra zero or two) from asking a cluster for a dataset it cannot hold.
MAX_ENTITIES = 1_000_000
MAX_DAYS = 3_660


class SimulatorParams(BaseModel):
    """Parameters of one simulated dataset (`spec.data.params`); equal params give identical frames.

    `amount_scale` and `amount_shift` are drift knobs: each customer's mean amount becomes
    `mean * amount_scale + amount_shift` and its standard deviation `std * amount_scale`. The scenario
    rates (`compromised_*_per_day`, `customer_fraud_share`, ...) are the fraud drift knobs. Values that
    would crash the generator or silently mean nothing are refused; types are strict, so
    `customers: "5000"` or `true` is an error rather than a guess.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    customers: int = Field(5000, ge=1, le=MAX_ENTITIES, description="Number of simulated cards.")
    terminals: int = Field(10000, ge=1, le=MAX_ENTITIES, description="Number of payment terminals.")
    days: int = Field(183, ge=1, le=MAX_DAYS, description="Days of transactions, from start_date.")
    start_date: str = Field("2018-04-01", pattern=r"^\d{4}-\d{2}-\d{2}$", description="First day (YYYY-MM-DD).")
    radius: float = Field(5.0, gt=0, allow_inf_nan=False,
                          description=f"A customer uses the terminals this close (on a {GRID_SIZE:g}-wide square).")
    seed: int = Field(0, ge=0, description="Seed of every random stream: equal params give equal data.")
    fraud_amount_threshold: float = Field(220.0, ge=0, description="Scenario 1: amounts above this are fraud.")
    # validate_default: `terminals: 1` alone must fail on the default of 2 compromised per day.
    compromised_terminals_per_day: int = Field(2, ge=0, validate_default=True,
                                               description="Scenario 2: terminals compromised per day.")
    terminal_compromise_days: int = Field(28, ge=0, description="Scenario 2: days a terminal stays compromised.")
    compromised_customers_per_day: int = Field(3, ge=0, validate_default=True,
                                               description="Scenario 3: cards compromised per day.")
    customer_compromise_days: int = Field(14, ge=0, description="Scenario 3: days a card stays compromised.")
    customer_fraud_share: float = Field(1 / 3, ge=0, le=1,
                                        description="Scenario 3: share of a compromised card's payments made fraud.")
    customer_fraud_multiplier: float = Field(5.0, gt=0, allow_inf_nan=False,
                                             description="Scenario 3: fraudulent amounts are multiplied by this.")
    amount_scale: float = Field(1.0, gt=0, allow_inf_nan=False, description="Drift knob: scales spending.")
    amount_shift: float = Field(0.0, allow_inf_nan=False, description="Drift knob: shifts mean spending.")

    @field_validator("start_date")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        try:
            date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a calendar date: {exc}") from None
        return value

    @field_validator("compromised_terminals_per_day")
    @classmethod
    def _terminals_exist(cls, value: int, info: ValidationInfo) -> int:
        _at_most(value, info.data.get("terminals"), "terminals")
        return value

    @field_validator("compromised_customers_per_day")
    @classmethod
    def _customers_exist(cls, value: int, info: ValidationInfo) -> int:
        _at_most(value, info.data.get("customers"), "customers")
        return value

    @field_validator("amount_shift")
    @classmethod
    def _means_stay_positive(cls, value: float, info: ValidationInfo) -> float:
        scale = info.data.get("amount_scale")
        if scale is not None and _AMOUNT_MEAN_RANGE[0] * scale + value <= 0:
            raise ValueError(f"must keep every mean amount > 0, so above {-_AMOUNT_MEAN_RANGE[0] * scale:g} "
                             f"with amount_scale {scale:g}")
        return value


def _at_most(value: int, limit: int | None, name: str) -> None:
    # `limit` is None when that field was itself invalid: its own error says so.
    if limit is not None and value > limit:
        raise ValueError(f"must be <= {name} ({limit})")


@dataclass(frozen=True)
class _Transactions:
    """Column arrays of the transactions, kept together while they are built."""

    customer: np.ndarray  # int32
    terminal: np.ndarray  # int32
    amount: np.ndarray  # float64
    seconds: np.ndarray  # int64, since start_date 00:00
    day: np.ndarray  # int32
    fraud: np.ndarray  # int8
    scenario: np.ndarray  # int8


def simulate(params: SimulatorParams) -> pd.DataFrame:
    """Simulate the transaction table described by ``params``, sorted by time.

    Columns are those of ``COLUMNS``; ``tx_fraud_scenario`` is 0 for genuine
    transactions and 1, 2 or 3 for the fraud scenario that labelled it last.
    """
    streams = _streams(params.seed)
    world = layout(params)
    tx = _genuine_transactions(params, world, streams[2])
    _scenario_amount(tx, params.fraud_amount_threshold)
    _scenario_terminals(tx, params, streams[3])
    _scenario_customers(tx, params, streams[4])
    return _to_frame(tx, params.start_date)


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent generators: profiles, terminals, transactions, scenario 2, 3."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]


@dataclass(frozen=True)
class Layout:
    """Customer profiles, terminal positions and which terminals each customer uses.

    Customer ``c`` uses the terminals ``indices[indptr[c]:indptr[c + 1]]``.
    Exposed so that callers (plots, tests, monitoring) can see the geography
    behind a simulated frame without re-deriving the random streams.
    """

    customer_xy: np.ndarray
    mean_amount: np.ndarray  # drift knobs applied
    std_amount: np.ndarray
    tx_per_day: np.ndarray
    terminal_xy: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray


def layout(params: SimulatorParams) -> Layout:
    """The customer/terminal layout that ``simulate(params)`` uses."""
    streams = _streams(params.seed)
    profiles, terminal_xy = _profiles(params, streams[0]), _terminal_xy(params, streams[1])
    indptr, indices = terminals_in_radius(profiles["xy"], terminal_xy, params.radius)
    return Layout(
        profiles["xy"],
        profiles["mean"],
        profiles["std"],
        profiles["tx_per_day"],
        terminal_xy,
        indptr,
        indices,
    )


def _profiles(params: SimulatorParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Customer location, spending mean/std (with drift knobs) and daily rate."""
    n = params.customers
    xy = rng.uniform(0.0, GRID_SIZE, size=(n, 2))
    base_mean = rng.uniform(*_AMOUNT_MEAN_RANGE, size=n)
    tx_per_day = rng.uniform(*_TX_PER_DAY_RANGE, size=n)
    mean = base_mean * params.amount_scale + params.amount_shift
    std = base_mean / 2.0 * params.amount_scale
    return {"xy": xy, "mean": mean, "std": std, "tx_per_day": tx_per_day}


def _terminal_xy(params: SimulatorParams, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, GRID_SIZE, size=(params.terminals, 2))


def terminals_in_radius(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Terminals strictly within ``radius`` of each customer, as CSR arrays.

    Returns ``(indptr, indices)``: customer ``c`` may use terminals
    ``indices[indptr[c]:indptr[c + 1]]`` (ascending).  Distances are computed
    brute force in blocks of customers so memory stays ~30 MB whatever the size.
    """
    r2 = radius * radius
    counts, columns = [], []
    for start in range(0, len(customer_xy), _DISTANCE_BLOCK):
        block = customer_xy[start : start + _DISTANCE_BLOCK]
        d2 = (block[:, 0, None] - terminal_xy[None, :, 0]) ** 2
        d2 += (block[:, 1, None] - terminal_xy[None, :, 1]) ** 2
        rows, cols = np.nonzero(d2 < r2)
        counts.append(np.bincount(rows, minlength=len(block)))
        columns.append(cols.astype(np.int32))
    indptr = np.zeros(len(customer_xy) + 1, dtype=np.int64)
    if counts:
        np.cumsum(np.concatenate(counts), out=indptr[1:])
    indices = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int32)
    return indptr, indices


def _genuine_transactions(params: SimulatorParams, world: Layout, rng: np.random.Generator) -> _Transactions:
    """Draw Poisson daily counts, then times, amounts and terminals in bulk."""
    n_days = params.days
    counts = rng.poisson(world.tx_per_day[:, None], size=(params.customers, n_days))
    cell = np.repeat(np.arange(counts.size, dtype=np.int64), counts.ravel())
    customer, day = (cell // n_days).astype(np.int32), (cell % n_days).astype(np.int32)
    del cell, counts
    # All draws happen for every draft row so that the random stream does not
    # depend on which rows are later dropped.
    seconds = rng.normal(_TIME_MEAN, _TIME_STD, size=len(customer)).astype(np.int64)
    z, u_negative, u_terminal = (
        rng.standard_normal(len(customer)),
        rng.random(len(customer)),
        rng.random(len(customer)),
    )
    degree = np.diff(world.indptr)
    keep = (seconds > 0) & (seconds < SECONDS_PER_DAY) & (degree[customer] > 0)
    customer, day, seconds = customer[keep], day[keep], seconds[keep]
    amount = _amounts(world.mean_amount[customer], world.std_amount[customer], z[keep], u_negative[keep])
    pick = np.minimum((u_terminal[keep] * degree[customer]).astype(np.int64), degree[customer] - 1)
    terminal = world.indices[world.indptr[customer] + pick]
    seconds += day.astype(np.int64) * SECONDS_PER_DAY
    order = np.argsort(seconds, kind="stable")  # ties: by customer, then draw order
    n = len(order)
    return _Transactions(
        customer[order],
        terminal[order],
        amount[order],
        seconds[order],
        day[order],
        np.zeros(n, np.int8),
        np.zeros(n, np.int8),
    )


def _amounts(mean: np.ndarray, std: np.ndarray, z: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Normal amounts; negative ones are redrawn uniformly in [0, 2 * mean]."""
    amount = mean + std * z
    negative = amount < 0
    amount[negative] = u[negative] * 2.0 * mean[negative]
    return np.round(amount, 2)


def _scenario_amount(tx: _Transactions, threshold: float) -> None:
    """Scenario 1: every amount above the threshold is fraud."""
    mask = tx.amount > threshold
    tx.fraud[mask] = 1
    tx.scenario[mask] = 1


def _scenario_terminals(tx: _Transactions, params: SimulatorParams, rng: np.random.Generator) -> None:
    """Scenario 2: terminals compromised on day d are fraudulent on [d, d + L)."""
    n_days, length = params.days, params.terminal_compromise_days
    compromised = np.zeros((params.terminals, n_days), dtype=bool)
    for d in range(n_days):
        chosen = rng.choice(params.terminals, size=params.compromised_terminals_per_day, replace=False)
        compromised[chosen, d : d + length] = True
    mask = compromised[tx.terminal, tx.day]
    tx.fraud[mask] = 1
    tx.scenario[mask] = 2


def _scenario_customers(tx: _Transactions, params: SimulatorParams, rng: np.random.Generator) -> None:
    """Scenario 3: a share of a compromised customer's next-L-days spending is
    fraud with a multiplied amount (leaked card credentials)."""
    by_customer = np.argsort(tx.customer, kind="stable")  # time-sorted within customer
    bounds = np.searchsorted(tx.customer[by_customer], np.arange(params.customers + 1))
    for d in range(params.days):
        chosen = rng.choice(params.customers, size=params.compromised_customers_per_day, replace=False)
        rows = _rows_in_window(tx.day, by_customer, bounds, chosen, d, d + params.customer_compromise_days)
        n_fraud = math.floor(len(rows) * params.customer_fraud_share + 1e-9)
        hit = rng.choice(rows, size=n_fraud, replace=False)
        tx.amount[hit] = np.round(tx.amount[hit] * params.customer_fraud_multiplier, 2)
        tx.fraud[hit] = 1
        tx.scenario[hit] = 3


def _rows_in_window(
    day: np.ndarray, by_customer: np.ndarray, bounds: np.ndarray, customers: np.ndarray, first: int, stop: int
) -> np.ndarray:
    """Rows of ``customers`` whose day lies in ``[first, stop)``, ascending."""
    parts = []
    for c in customers:
        rows = by_customer[bounds[c] : bounds[c + 1]]
        lo, hi = np.searchsorted(day[rows], [first, stop])
        parts.append(rows[lo:hi])
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def _to_frame(tx: _Transactions, start_date: str) -> pd.DataFrame:
    origin = np.datetime64(start_date, "s")
    stamps = (origin + tx.seconds.astype("timedelta64[s]")).astype("datetime64[ns]")
    return pd.DataFrame(
        {
            "transaction_id": np.arange(len(tx.seconds), dtype=np.int64),
            "tx_datetime": stamps,
            "customer_id": tx.customer,
            "terminal_id": tx.terminal,
            "tx_amount": tx.amount,
            "tx_time_seconds": tx.seconds,
            "tx_time_days": tx.day,
            "tx_fraud": tx.fraud,
            "tx_fraud_scenario": tx.scenario,
        },
        columns=list(COLUMNS),
    )
