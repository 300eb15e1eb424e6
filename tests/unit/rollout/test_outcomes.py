"""Judgement on labels (ferry.rollout.outcomes) and the controller's shadow stage, on simulated payments whose
scores come from models of known quality: a challenger as good as the champion, one trained on shuffled labels
(scores unrelated to fraud), and too few labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from tests.unit.rollout.test_controller import Lab, Traffic, spec
from tests.unit.rollout.test_policy import SHAPE, obs

from ferry.contract import names
from ferry.rollout.controller import Controller
from ferry.rollout.metrics import RolloutMetrics
from ferry.rollout.outcomes import OutcomesUnavailable, PairedSample, judge
from ferry.rollout.policy import Action, Verdict, check, shadow_check, with_outcomes
from ferry.spec.models import Analysis, OutcomeAnalysis, ShadowSpec
from fraud_detection.metrics import evaluate_named

POLICY = OutcomeAnalysis(metrics=["average_precision"], margin=0.02, min_labelled=500, min_positives=20,
                         resamples=200)


def payments(n: int, seed: int, fraud_rate: float = 0.05) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"transaction_id": np.arange(n).astype(str),
                         "tx_datetime": pd.Timestamp("2018-05-01") + pd.to_timedelta(np.sort(
                             rng.integers(0, 7 * 86_400, n)), unit="s"),
                         "customer_id": rng.integers(0, 800, n), "terminal_id": rng.integers(0, 1000, n),
                         "tx_amount": rng.gamma(2.0, 30.0, n),
                         "tx_fraud": (rng.random(n) < fraud_rate).astype(np.int8)})


def informative(rows: pd.DataFrame, seed: int, signal: float = 1.5) -> np.ndarray:
    """Scores of a model that sees fraud through what the features show (noise shared by every model of the same
    data) and a little of its own (per seed): two such models rank mostly alike, as retrained models do."""
    shared = np.random.default_rng(0).normal(size=len(rows))
    own = np.random.default_rng(seed).normal(size=len(rows))
    return 1 / (1 + np.exp(-(signal * rows["tx_fraud"].to_numpy() + shared + 0.1 * own - 2)))


def sample_of(rows: pd.DataFrame, champion: np.ndarray, challenger: np.ndarray) -> PairedSample:
    return PairedSample(rows, champion, challenger, int(rows["tx_fraud"].sum()), 0, len(rows))


def evaluate(rows, scores, names):
    return evaluate_named(rows, scores, names)


def test_a_challenger_as_good_as_the_champion_passes() -> None:
    rows = payments(3000, 1)
    evidence = judge(POLICY, sample_of(rows, informative(rows, 2), informative(rows, 3)), evaluate)
    assert evidence.verdict is Verdict.PASS, evidence.reasons
    [ap] = evidence.metrics
    assert ap.lower >= -POLICY.margin and ap.lower <= ap.delta <= ap.upper


def test_a_challenger_trained_on_shuffled_labels_fails_on_labels() -> None:
    rows = payments(3000, 1)
    shuffled = np.random.default_rng(4).permutation(informative(rows, 3))
    evidence = judge(POLICY, sample_of(rows, informative(rows, 2), shuffled), evaluate)
    assert evidence.verdict is Verdict.FAIL
    assert evidence.reasons[0].startswith("worse on labels") and "average_precision" in evidence.reasons[0]


def test_too_few_labels_hold_and_say_how_many() -> None:
    rows = payments(300, 1)
    evidence = judge(POLICY, sample_of(rows, informative(rows, 2), informative(rows, 3)), evaluate)
    assert evidence.verdict is Verdict.INCONCLUSIVE
    assert "300 paired labelled transactions (< 500)" in evidence.reasons[0]
    assert judge(POLICY, None, evaluate).labelled == 0


def test_the_same_labels_always_give_the_same_bounds() -> None:
    rows = payments(1500, 5)
    sample = sample_of(rows, informative(rows, 2), informative(rows, 3, signal=1.2))
    assert judge(POLICY, sample, evaluate) == judge(POLICY, sample, evaluate)


def test_card_precision_is_judged_too_when_asked() -> None:
    rows = payments(2000, 6)
    policy = POLICY.model_copy(update={"metrics": ["average_precision", "card_precision_at_100"], "resamples": 60})
    shuffled = np.random.default_rng(4).permutation(informative(rows, 3))
    evidence = judge(policy, sample_of(rows, informative(rows, 2), shuffled), evaluate)
    assert [m.name for m in evidence.metrics] == ["average_precision", "card_precision_at_100"]
    assert evidence.record()["card_precision_at_100"][0] < 0


def test_labels_and_traffic_together_take_the_worse_verdict() -> None:
    rows = payments(3000, 1)
    worse = judge(POLICY, sample_of(rows, informative(rows, 2), np.random.default_rng(4).permutation(
        informative(rows, 3))), evaluate)
    healthy = shadow_check(Analysis(), 5000, 0)
    assert healthy.verdict is Verdict.PASS
    merged = with_outcomes(healthy, worse)
    assert merged.verdict is Verdict.FAIL and merged.reasons == worse.reasons and merged.outcomes is worse


def test_labels_outrank_score_psi_only_when_they_find_the_challenger_not_worse() -> None:
    """A retrain after drift scores differently on purpose: the labels that judge it decide, and PSI gates alone
    while labels are too few; errors and latency keep gating either way."""
    rows = payments(3000, 1)
    sample = sample_of(rows, informative(rows, 2), informative(rows, 3))
    better, few = judge(POLICY, sample, evaluate), judge(POLICY, sample_of(rows[:300], *[
        informative(rows, s)[:300] for s in (2, 3)]), evaluate)
    worse = judge(POLICY, sample_of(rows, informative(rows, 2), np.random.default_rng(4).permutation(
        informative(rows, 3))), evaluate)
    shifted = check(Analysis(), obs(0, 0, n=1000, shape=tuple(reversed(SHAPE))))
    assert shifted.verdict is Verdict.FAIL and "score PSI" in shifted.reasons[0]
    outranked = with_outcomes(shifted, better)
    assert outranked.verdict is Verdict.PASS and "within limits" in outranked.reasons[0]
    assert any("score PSI" in r and "outranked by the labels" in r for r in outranked.reasons), outranked.reasons
    assert with_outcomes(shifted, few).verdict is Verdict.FAIL  # too few labels: PSI still stands in for them
    assert with_outcomes(shifted, worse).verdict is Verdict.FAIL
    slow_and_shifted = check(Analysis(), obs(0, 0, n=1000, p99=500, shape=tuple(reversed(SHAPE))))
    kept = with_outcomes(slow_and_shifted, better)
    assert kept.verdict is Verdict.FAIL and kept.reasons[0].startswith("p99 latency")
    assert kept.reasons[1:] == (f"{slow_and_shifted.reasons[1]} (outranked by the labels)",), kept.reasons


def test_a_challenger_failing_in_shadow_fails_the_shadow_check() -> None:
    assert shadow_check(Analysis(), 900, 100).verdict is Verdict.FAIL
    assert shadow_check(Analysis(), 50, 0).verdict is Verdict.INCONCLUSIVE


class Labelled:
    """An OutcomeSource: labels accumulate with every look, from a challenger of the given quality."""

    def __init__(self, shuffled: bool, per_look: int = 400, unreadable: bool = False) -> None:
        self.rows = payments(6000, 11)
        self.champion = informative(self.rows, 2)
        challenger = informative(self.rows, 3)
        self.challenger = np.random.default_rng(4).permutation(challenger) if shuffled else challenger
        self.per_look, self.looks, self.unreadable = per_look, 0, unreadable

    def sample(self, champion: str, challenger: str, since_unix: float) -> PairedSample:
        if self.unreadable:
            raise OutcomesUnavailable("connection refused")
        self.looks += 1
        n = min(self.per_look * self.looks, len(self.rows))
        rows = self.rows.iloc[:n].reset_index(drop=True)
        return sample_of(rows, self.champion[:n], self.challenger[:n])

    def evaluate(self, rows, scores, names):
        return evaluate_named(rows, scores, names)


def shadow_controller(lab: Lab, source: Labelled | None, duration: str = "2m") -> Controller:
    model = spec()
    rollout = model.spec.rollout.model_copy(update={"shadow": ShadowSpec(duration=duration, sample=1.0),
                                                    "outcomes": POLICY})
    model = model.model_copy(update={"spec": model.spec.model_copy(update={"rollout": rollout})})
    return Controller(lab.registry, model, Traffic(), lab.clock, RolloutMetrics(CollectorRegistry()),
                      outcomes=source)


def check_records(lab: Lab) -> list[dict]:
    return [json.loads(v) for k, v in sorted(lab.tags("2").items()) if k.startswith(names.TAG_ROLLOUT_CHECK_PREFIX)]


def test_shadow_stage_mirrors_first_holds_its_duration_then_walks_the_steps() -> None:
    lab = Lab(aliases={"champion": "1"})
    outcome = shadow_controller(lab, Labelled(shuffled=False)).run("2")
    assert outcome.action is Action.PROMOTE, outcome.reason
    assert lab.weights == ["0", "10", "25", "50", "100"]
    first = lab.registry.writes[0].values
    assert first[names.TAG_ROLLOUT_SHADOW_SAMPLE] == "1.0" and first[names.TAG_ROLLOUT_WEIGHT] == "0"
    records = check_records(lab)
    in_shadow = [r for r in records if r["reason"].startswith("in shadow for")]
    assert len(in_shadow) == 3 and all(r["weight"] == 0 and r["action"] == "hold" for r in in_shadow)  # 2 min
    assert records[3]["weight"] == 0 and records[3]["reason"].startswith("not yet known")  # no hold timer ran
    assert records[-1]["outcomes"]["labelled"] >= 500 and "shadow_rows" in records[0]


def test_worse_on_labels_is_rolled_back_although_traffic_looks_healthy() -> None:
    lab = Lab(aliases={"champion": "1"})
    outcome = shadow_controller(lab, Labelled(shuffled=True)).run("2")
    assert outcome.action is Action.ROLLBACK and "worse on labels" in outcome.reason
    assert lab.aliases == {"champion": "1"} and lab.weights[-1] == "0"
    assert "10" not in lab.weights  # it never served a user


def test_an_unreadable_log_holds_and_never_promotes() -> None:
    lab = Lab(aliases={"champion": "1"})
    outcome = shadow_controller(lab, Labelled(shuffled=False, unreadable=True)).run("2")
    assert outcome.action is Action.ROLLBACK and "cannot read the prediction log" in outcome.reason


@pytest.mark.parametrize("per_look", [20])
def test_labels_too_few_for_the_hold_timeout_roll_back_without_evidence(per_look: int) -> None:
    lab = Lab(aliases={"champion": "1"})
    outcome = shadow_controller(lab, Labelled(shuffled=False, per_look=per_look)).run("2")
    assert outcome.action is Action.ROLLBACK and "no evidence within 10m" in outcome.reason
    assert "too few labels" in outcome.reason
