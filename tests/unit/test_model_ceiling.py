"""benchmarks/model_ceiling.py: which frauds the features can see, the per-scenario counts behind card
precision@100, and the handbook loader's refusal of anything but a handbook day file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from benchmarks.model_ceiling import caught_by_scenario, load_handbook_raw, visible_fraud_scores

from fraud_detection.metrics import card_precision_top_k


def payments(rows: list[tuple[str, int, int, int, int]]) -> pd.DataFrame:
    """(time, card, terminal, fraud, scenario) rows as the simulator's columns."""
    time, card, terminal, fraud, scenario = zip(*rows, strict=True)
    return pd.DataFrame({"tx_datetime": pd.to_datetime(list(time)), "customer_id": card, "terminal_id": terminal,
                         "tx_fraud": fraud, "tx_fraud_scenario": scenario})


def test_a_terminal_fraud_is_visible_only_once_an_earlier_fraud_there_is_labelled_and_in_the_window() -> None:
    history = payments([("2018-07-01 10:00", 1, 7, 1, 2), ("2018-07-01 10:00", 1, 10, 1, 2),
                        ("2018-07-01 11:00", 2, 8, 0, 0)])
    rows = payments([
        ("2018-07-08 10:00", 3, 7, 1, 2),  # the July 1 fraud is 7 days old: labelled, in the window
        ("2018-07-08 09:59", 4, 7, 1, 2),  # 1 minute short of the delay
        ("2018-08-07 10:00", 5, 10, 1, 2),  # 37 days: out of the 30-day window behind the delay
        ("2018-08-07 09:59", 5, 10, 1, 2),  # just inside it
        ("2018-07-20 10:00", 6, 8, 1, 2),  # terminal 8 never had a fraud before
        ("2018-07-20 10:00", 6, 9, 1, 1),  # an amount fraud shows in the payment itself
        ("2018-07-20 10:00", 6, 9, 1, 3),  # so does a compromised card's
        ("2018-07-20 10:00", 6, 7, 0, 0),  # a genuine payment scores 0 wherever it is
    ])
    history = pd.concat([history, rows], ignore_index=True)
    assert visible_fraud_scores(history, rows, delay_days=7, window_days=30).tolist() == [1, 0, 0, 1, 0, 1, 1, 0]


def test_the_scenario_counts_add_up_to_card_precisions_hits() -> None:
    rows = payments([
        ("2018-08-08 10:00", 1, 1, 1, 2), ("2018-08-08 11:00", 2, 1, 0, 0), ("2018-08-08 12:00", 3, 2, 1, 1),
        ("2018-08-09 10:00", 1, 1, 1, 2),  # card 1 was found on the 8th: not counted again
        ("2018-08-09 11:00", 4, 3, 1, 3), ("2018-08-09 12:00", 5, 3, 0, 0), ("2018-08-09 13:00", 6, 3, 0, 0),
    ])
    scores = np.array([0.9, 0.8, 0.1, 0.99, 0.2, 0.3, 0.25])
    counts = caught_by_scenario(rows, scores, k=2)
    assert counts == {1: (0, 1), 2: (1, 1), 3: (0, 1)}
    hits = sum(hit for hit, _ in counts.values())
    assert hits / (2 * 2) == pytest.approx(card_precision_top_k(rows, scores, k=2))


def test_the_handbook_loader_refuses_a_pickle_that_names_anything_else(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("never run",))

    (tmp_path / "2018-04-01.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing builtins\.print"):
        load_handbook_raw(tmp_path)


def test_the_handbook_loader_says_where_to_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="simulated-data-raw"):
        load_handbook_raw(tmp_path)
