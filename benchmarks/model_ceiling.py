"""What card precision@100 can reach on the handbook protocol, and where a model loses it (bench_model.py).

The simulator's frauds come from three scenarios: an amount over a threshold (1), a compromised terminal whose
every payment is a fraud for weeks (2), a compromised card whose payments are multiplied (3). The features see
scenarios 1 and 3 in the payment's own amount and its card's history. A compromised terminal shows only in its
labels, and the features read those a `delay_days` late (the handbook's feedback delay): a terminal compromised
less than that long ago looks like any other. `visible_fraud_scores` is the oracle that knows only what the
features could: every fraud of scenario 1 or 3, and those of scenario 2 whose terminal has a fraud old enough to
be labelled and recent enough to be in the features' longest window. Its card precision@100 is what a perfect
model of these features reaches; the plain oracle's is what a model that knew every label would.

`load_handbook_raw` reads the handbook's own published transactions (a clone of
github.com/Fraud-Detection-Handbook/simulated-data-raw, one pickled DataFrame per day): another realisation of
the same simulator, the one the handbook's figures were measured on.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraud_detection.metrics import _top_k_fraud_cards

SCENARIOS = {1: "amount over the threshold", 2: "compromised terminal", 3: "compromised card"}
TERMINAL_SCENARIO = 2
S_PER_DAY = 86_400


def visible_fraud_scores(history: pd.DataFrame, rows: pd.DataFrame, delay_days: int, window_days: int) -> np.ndarray:
    """1.0 for each fraud in `rows` that the features could see, else 0.0. A scenario-2 fraud is visible when its
    terminal has a fraud in `history` at (t - delay_days - window_days, t - delay_days]."""
    fraud = rows["tx_fraud"].to_numpy() == 1
    terminal_fraud = rows["tx_fraud_scenario"].to_numpy() == TERMINAL_SCENARIO
    known = _terminal_has_fraud_between(history, rows, (delay_days + window_days) * S_PER_DAY,
                                        delay_days * S_PER_DAY)
    return (fraud & (~terminal_fraud | known)).astype(np.float64)


def _terminal_has_fraud_between(history: pd.DataFrame, rows: pd.DataFrame, far_s: int, near_s: int) -> np.ndarray:
    """Per row: whether its terminal has a fraud in `history` at (t - far_s, t - near_s], in seconds."""
    frauds = history[history["tx_fraud"] == 1]
    fraud_s, row_s = _seconds(frauds), _seconds(rows)
    origin = min(fraud_s.min(initial=0), row_s.min(initial=0)) - far_s
    span = max(fraud_s.max(initial=0), row_s.max(initial=0)) - origin + 1

    def keys(terminals: pd.Series, seconds: np.ndarray) -> np.ndarray:  # (terminal, time) as one sortable int
        return terminals.to_numpy().astype(np.int64) * span + (seconds - origin)  # seconds: no int64 overflow

    fraud_keys = np.sort(keys(frauds["terminal_id"], fraud_s))
    upper = np.searchsorted(fraud_keys, keys(rows["terminal_id"], row_s - near_s), side="right")
    lower = np.searchsorted(fraud_keys, keys(rows["terminal_id"], row_s - far_s), side="right")
    return upper > lower


def _seconds(frame: pd.DataFrame) -> np.ndarray:
    return frame["tx_datetime"].to_numpy().astype("datetime64[s]").astype(np.int64)


def caught_by_scenario(rows: pd.DataFrame, scores: np.ndarray, k: int) -> dict[int, tuple[int, int]]:
    """Per scenario: (fraudulent cards in a day's top k, fraudulent cards that day), summed over the days, with
    the cards found on earlier days removed, as card precision@k counts them. A card with frauds of two scenarios
    on one day (rare) is counted under the higher-numbered one."""
    frame = pd.DataFrame({"day": rows["tx_datetime"].to_numpy().astype("datetime64[D]"),
                          "card": rows["customer_id"].to_numpy(), "fraud": rows["tx_fraud"].to_numpy() == 1,
                          "scenario": rows["tx_fraud_scenario"].to_numpy(), "score": np.asarray(scores)})
    found: set[Any] = set()
    totals = {scenario: [0, 0] for scenario in SCENARIOS}
    for _, day in frame.groupby("day", sort=True):
        day = day[~day["card"].isin(list(found))]
        hits = _top_k_fraud_cards(day, k)  # the metric's own ranking and tie rule
        found.update(hits)
        scenario_of = day[day["fraud"]].groupby("card")["scenario"].max()  # per fraudulent card
        for scenario, total in totals.items():
            total[0] += int((scenario_of.loc[hits] == scenario).sum())
            total[1] += int((scenario_of == scenario).sum())
    return {scenario: (hit, of) for scenario, (hit, of) in totals.items()}


# --------------------------------------------------------------------------- the handbook's published data

# What the handbook's daily pickles are made of (pandas 1.x objects, numpy arrays), and nothing else: a pickle
# can name any callable, so the loader refuses every other global instead of trusting the files.
HANDBOOK_PICKLE_GLOBALS = frozenset({
    ("builtins", "slice"), ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("pandas.core.frame", "DataFrame"), ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.indexes.base", "_new_Index"), ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.numeric", "Int64Index"),
})
HANDBOOK_COLUMNS = {"CUSTOMER_ID": "int64", "TERMINAL_ID": "int64", "TX_TIME_SECONDS": "int64",
                    "TX_TIME_DAYS": "int64"}


def load_handbook_raw(data_dir: Path) -> pd.DataFrame:
    """The handbook's transactions (one file a day), in ferry's column names and types."""
    files = sorted(Path(data_dir).glob("*.pkl"))
    if not files:
        raise FileNotFoundError(f"no daily .pkl files in {data_dir}: clone "
                                "https://github.com/Fraud-Detection-Handbook/simulated-data-raw and pass its data/")
    frame = pd.concat(_read_restricted(files), ignore_index=True).astype(HANDBOOK_COLUMNS)
    frame.columns = [name.lower() for name in frame.columns]
    return frame


def _read_restricted(files: Iterable[Path]) -> list[pd.DataFrame]:
    from pandas.compat.pickle_compat import Unpickler  # maps pandas 1.x class names to today's

    class Restricted(Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) not in HANDBOOK_PICKLE_GLOBALS:
                raise pickle.UnpicklingError(f"refusing {module}.{name}: not part of a handbook day file")
            return super().find_class(module, name)

    frames = []
    for path in files:
        with path.open("rb") as handle:
            frames.append(Restricted(handle).load())
    return frames
