"""Drift monitoring without Ray: reference bins, PSI, the sliding window, the monitor's champion handling,
and the router's scoring path feeding it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from tests.support.serving_fakes import RecordingRecorder, serving_registry, transaction, watcher_of

from ferry.adapters.registry_port import RolloutView, VersionFacts, parse_trained_at
from ferry.contract import metrics
from ferry.contract.psi import psi
from ferry.serving import drift
from ferry.serving.drift import DriftMonitor, DriftWindow
from ferry.serving.service import ScoringService, WorkloadView
from ferry.stats.reference import (
    SCORE,
    BadReference,
    Histogram,
    Reference,
    build_reference,
    histogram,
    sample_rows,
    workload_feature_names,
)
from fraud_detection.workload import FraudDetectionWorkload


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Gauges:
    psis: dict[str, float] = field(default_factory=dict)
    trained: list[float] = field(default_factory=list)

    def psi(self, feature: str, value: float) -> None:
        self.psis[feature] = value

    def trained_at(self, seconds: float) -> None:
        self.trained.append(seconds)


def reference(seed: int = 0, rows: int = 5000) -> tuple[Reference, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(50, 10, rows), rng.integers(0, 2, rows).astype(float)])
    return build_reference(x, ("amount", "night"), rng.uniform(0, 1, rows)), x


# --- bins and PSI ------------------------------------------------------------------------------------

def test_histogram_cuts_are_deciles_and_counts_cover_every_row() -> None:
    values = np.arange(1000, dtype=float)
    hist = histogram(values)
    assert hist.cuts == pytest.approx(np.quantile(values, np.arange(1, 10) / 10, method="lower"))
    assert hist.cuts[0] in values and sum(hist.counts) == 1000 and hist.bins == 10
    assert max(hist.counts) - min(hist.counts) <= 2


def test_repeated_quantiles_merge_so_binary_and_constant_features_work() -> None:
    binary = histogram(np.array([0.0] * 700 + [1.0] * 300))
    assert binary.cuts == [0.0, 1.0] and binary.counts == [0, 700, 300]
    constant = histogram(np.full(50, 3.0))
    assert constant.cuts == [3.0] and constant.counts == [0, 50]


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift() -> None:
    ref, x = reference()
    same = DriftWindow(ref, ("amount", "night"), 60, Clock())
    same.add(x[:2000], np.random.default_rng(5).uniform(0, 1, 2000))
    values = same.psi()
    assert set(values) == {"amount", "night", SCORE}
    assert all(v < 0.02 for v in values.values()), values
    shifted = DriftWindow(ref, ("amount", "night"), 60, Clock())
    moved = x[:2000].copy()
    moved[:, 0] = moved[:, 0] * 1.5
    shifted.add(moved, np.random.default_rng(5).uniform(0.5, 1, 2000))
    drifted = shifted.psi()
    assert drifted["amount"] > 1.0 and drifted[SCORE] > 0.25 and drifted["night"] < 0.02


def test_psi_matches_the_textbook_formula_and_guards_empty_bins() -> None:
    expected, actual = [50, 30, 20], [30, 30, 40]
    by_hand = sum((a / 100 - e / 100) * math.log((a / 100) / (e / 100)) for e, a in zip(expected, actual, strict=True))
    assert psi(expected, actual) == pytest.approx(by_hand)
    assert math.isfinite(psi([10, 0, 10], [0, 10, 10])) and psi([10, 0, 10], [0, 10, 10]) > 1
    assert psi([0, 0], [1, 2]) == 0.0
    with pytest.raises(ValueError, match="different bins"):
        psi([1, 2], [1, 2, 3])


def test_reference_round_trips_and_bad_json_names_the_source_and_field() -> None:
    ref, _ = reference()
    assert Reference.from_json(ref.to_json(), "x") == ref
    broken = ref.to_json().replace('"counts": [', '"counts": [1, ', 1)
    with pytest.raises(BadReference, match=r"fraud v3: field features\.amount: .*re-register"):
        Reference.from_json(broken, "fraud v3")
    with pytest.raises(BadReference, match="format 9"):
        Reference.from_json(ref.to_json().replace('"format": 1', '"format": 9'), "v")
    with pytest.raises(ValueError, match="strictly ascending"):
        Histogram(cuts=[2.0, 1.0], counts=[1, 1, 1])


def test_build_reference_checks_shape_and_the_reserved_score_name() -> None:
    with pytest.raises(BadReference, match="one column per feature"):
        build_reference(np.zeros((5, 3)), ("a", "b"), None)
    with pytest.raises(BadReference, match="named 'score'"):
        build_reference(np.zeros((5, 1)), ("score",), None)
    assert build_reference(np.ones((5, 1)), ("a",), None).score is None


def test_sample_rows_is_seeded_and_bounded() -> None:
    big = np.arange(1000).reshape(-1, 1)
    assert sample_rows(big, 100).shape == (100, 1)
    assert np.array_equal(sample_rows(big, 100), sample_rows(big, 100))
    assert sample_rows(big, 5000) is big


def test_fraud_workload_columns_are_its_feature_names() -> None:
    workload = FraudDetectionWorkload()
    assert workload_feature_names(workload) == tuple(workload.feature_names)
    assert workload_feature_names(workload) == WorkloadView.of(workload).feature_names


def test_trained_at_tag_parsing() -> None:
    assert parse_trained_at("2026-11-26T15:00:00Z") == 1795705200.0
    assert parse_trained_at("yesterday") is None and parse_trained_at(None) is None
    assert parse_trained_at("2026-11-26T15:00:00") is None  # no zone: refuse rather than guess


# --- the window ----------------------------------------------------------------------------------------

def test_window_forgets_rows_older_than_the_window() -> None:
    ref, x = reference()
    clock = Clock()
    window = DriftWindow(ref, ("amount", "night"), 60, clock)
    moved = x[:500].copy()
    moved[:, 0] += 40
    window.add(moved)
    assert window.psi(min_rows=100)["amount"] > 1
    clock.now += 30
    window.add(x[500:1000])
    assert window.psi(min_rows=100)["amount"] > 0.3  # both halves still in the window
    clock.now += 35
    window.add(x[1000:1500])
    assert window.psi(min_rows=100)["amount"] < 0.05  # the drifted rows slid out
    clock.now += 120
    assert window.psi(min_rows=1) == {}  # nothing in the last minute


def test_window_publishes_nothing_below_min_rows_and_ignores_unknown_columns() -> None:
    ref, x = reference()
    window = DriftWindow(ref, ("extra", "amount", "night"), 60, Clock())
    window.add(np.column_stack([np.zeros(150), x[:150]]), np.array([0.5] * 50))
    assert window.names == ["amount", "night"]
    assert set(window.psi(min_rows=100)) == {"amount", "night"}  # only 50 champion scores
    assert window.psi(min_rows=200) == {}


# --- the monitor -----------------------------------------------------------------------------------------

def monitor(facts: dict[str, VersionFacts], champion: list[str | None], gauges: Gauges,
            clock: Clock | None = None) -> DriftMonitor:
    def load(version: str) -> VersionFacts:
        if version not in facts:
            raise ConnectionError("registry down")
        return facts[version]

    return DriftMonitor("fraud", ("amount", "night"), 60, gauges, lambda: champion[0], load, clock or Clock(),
                        min_rows=100)


def test_monitor_follows_the_champion_and_publishes_psi_and_training_time() -> None:
    ref, x = reference()
    other, _ = reference(seed=1)
    gauges = Gauges()
    champion: list[str | None] = ["1"]
    mon = monitor({"1": VersionFacts(ref, 1.7e9), "2": VersionFacts(other, 1.8e9)}, champion, gauges)
    mon.observe("1", x[:50], [0.5] * 50)  # before the first tick: no window yet, ignored
    assert mon.tick() == {} and gauges.trained == [1.7e9]
    mon.observe("1", x[:300], np.random.default_rng(0).uniform(0, 1, 300))
    mon.observe("9", x[:300] + 100, [0.9] * 300)  # a batch scored by another champion: not counted
    published = mon.tick()
    assert set(published) == {"amount", "night", SCORE} and max(published.values()) < 0.1
    assert gauges.psis == published
    champion[0] = "2"
    assert mon.tick() == {} and mon.version == "2" and gauges.trained[-1] == 1.8e9  # fresh window


def test_monitor_keeps_its_window_while_the_registry_is_down_and_skips_versions_without_reference() -> None:
    ref, x = reference()
    gauges = Gauges()
    champion: list[str | None] = ["1"]
    mon = monitor({"1": VersionFacts(ref, None), "3": VersionFacts(None, 5.0)}, champion, gauges)
    mon.tick()
    mon.observe("1", x[:200], [])
    champion[0] = "2"  # unreadable: keep version 1's window, retry next tick
    assert mon.tick() == {} and mon.version == "1"
    champion[0] = "3"
    mon.tick()
    assert mon.version == "3" and mon.window is None and gauges.trained == [5.0]
    mon.observe("3", x[:200], [0.1] * 200)  # no reference: no drift metrics, no error
    assert mon.tick() == {}


def test_publish_interval_follows_the_window_within_bounds() -> None:
    gauges = Gauges()
    assert DriftMonitor("m", (), 3600, gauges, lambda: None, lambda v: VersionFacts()).publish_interval_s == 15
    assert DriftMonitor("m", (), 30, gauges, lambda: None, lambda v: VersionFacts()).publish_interval_s == 2.5
    assert DriftMonitor("m", (), 5, gauges, lambda: None, lambda v: VersionFacts()).publish_interval_s == 1


def test_exported_names_are_what_rules_and_dashboards_select() -> None:
    # Ray's exporter prefixes application metrics with `ray_`; the rules select the prefixed names.
    assert metrics.DRIFT_PSI.series == "ray_" + metrics.DRIFT_PSI.name
    assert metrics.DRIFT_PSI.producer == metrics.LAST_TRAINED.producer == drift.__name__


# --- the scoring path feeds the monitor ------------------------------------------------------------------

def test_scoring_feeds_all_rows_and_only_champion_scores() -> None:
    workload = WorkloadView.of(FraudDetectionWorkload())
    names = workload.feature_names
    rows = np.array([[transaction(customer_id=k, amount=float(k))[n] for n in names] for k in range(400)])
    ref = build_reference(rows, names, np.linspace(0, 1, 400))
    watcher = watcher_of(serving_registry(RolloutView(champion="1", challenger="2", weight=50), model="fraud"),
                         "fraud")
    watcher.refresh()
    gauges = Gauges()
    mon = DriftMonitor("fraud", names, 60, gauges, lambda: "1", lambda v: VersionFacts(ref, None), min_rows=10)
    mon.tick()
    service = ScoringService("fraud", workload, watcher, RecordingRecorder(), "fp", drift=mon)
    from tests.support.serving_fakes import transactions

    predictions = service.score([workload.request_model.model_validate(t) for t in transactions(100)])
    champion_rows = sum(p.variant == "champion" for p in predictions)
    assert 0 < champion_rows < 100
    assert mon.window is not None
    _, _, counted = mon.window._totals()
    assert counted.tolist() == [100, champion_rows]


def test_the_rendered_router_args_carry_the_specs_drift_window() -> None:
    from ferry.render.rayservice import app_args
    from ferry.serving.schemas import AppArgs
    from ferry.spec import load_specs
    from ferry.spec.models import duration_s

    specs, errors = load_specs([Path(__file__).resolve().parents[3] / "gitops" / "models"])
    assert errors == []
    for spec in specs:
        args = AppArgs.model_validate(app_args(spec.model, "http://mlflow"))
        assert args.drift_window_s == duration_s(spec.model.spec.monitoring.drift_window)
    assert duration_s("1h") == 3600 and duration_s("30s") == 30 and duration_s("250ms") == 0.25


def test_single_rows_are_binned_together_and_none_is_lost() -> None:
    from ferry.serving.drift import PENDING_ROWS

    ref, x = reference()
    mon = monitor({"1": VersionFacts(ref, None)}, ["1"], Gauges())
    mon.tick()
    assert mon.window is not None
    for i in range(PENDING_ROWS - 1):  # single requests: held, not binned one by one
        mon.observe("1", x[i:i + 1], [0.5])
    assert int(mon.window._totals()[2][0]) == 0
    mon.observe("1", x[:1], [])  # the PENDING_ROWS-th row (a challenger's: no champion score) bins them all
    features, scores = (int(n) for n in mon.window._totals()[2])
    assert (features, scores) == (PENDING_ROWS, PENDING_ROWS - 1)
    for i in range(5):
        mon.observe("1", x[i:i + 1], [0.5])
    mon.tick()  # a tick bins what is held before it publishes
    assert int(mon.window._totals()[2][0]) == PENDING_ROWS + 5
