"""The canary policy: evidence of harm fails, only evidence of no harm passes, stale data never counts
twice, PSI is judged only above its noise floor, holds are bounded."""

from __future__ import annotations

import math
import random

import pytest

from ferry.rollout.policy import (
    Action,
    CheckResult,
    Observation,
    RolloutState,
    VariantStats,
    Verdict,
    check,
    chi2_quantile,
    decide,
    error_rate_evidence,
    faster_than,
    psi,
    psi_noise,
    wilson_lower,
)
from ferry.spec.models import Analysis, RolloutSpec

ANALYSIS = Analysis(max_error_rate_delta=0.01, significance=0.05, max_p99_latency_ms=100, max_score_psi=0.2,
                    min_requests=200, failure_limit=2)
SPEC = RolloutSpec(steps=[10, 50, 100], interval="30s", hold_timeout="2m", analysis=ANALYSIS)
SHAPE = (40, 20, 12, 8, 6, 4, 3, 2, 2, 1, 1, 1)  # a fraud-score-like histogram: most rows near 0


def scores(n: float, shape: tuple[int, ...] = SHAPE) -> tuple[float, ...]:
    return tuple(n * s / sum(shape) for s in shape)


def stats(n: float, errors: float, p99: float = 20.0, shape: tuple[int, ...] = SHAPE) -> VariantStats:
    return VariantStats(n, errors, p99, scores(n, shape), latency=((p99, n), (math.inf, n)))


def obs(champ_err: int, chal_err: int, n: int = 1000, champ_n: int = 4000, p99: float = 20.0,
        shape: tuple[int, ...] = SHAPE) -> Observation:
    return Observation(stats(champ_n, champ_err), stats(n, chal_err, p99, shape))


def test_too_little_data_is_inconclusive() -> None:
    result = check(ANALYSIS, Observation(stats(1000, 0), stats(50, 40)))
    assert result.verdict is Verdict.INCONCLUSIVE and "challenger has 50" in result.reasons[0]


def test_a_five_point_regression_fails_on_a_few_hundred_requests() -> None:
    result = check(ANALYSIS, obs(0, 15, n=300))
    assert result.verdict is Verdict.FAIL and "error rate +0.0500 exceeds" in result.reasons[0]
    assert result.error is not None and result.error.lower > 0.01


def test_passing_needs_evidence_of_no_harm() -> None:
    assert check(ANALYSIS, obs(0, 0, n=1000)).verdict is Verdict.PASS
    held = check(ANALYSIS, obs(0, 1, n=200))  # not significantly worse, but not shown to be fine either
    assert held.verdict is Verdict.INCONCLUSIVE and "no evidence of no harm" in held.reasons[0]
    assert held.error is not None and held.error.lower < 0.01 <= held.error.upper
    # 1 point worse on 1000 requests, right at the margin: neither proven harmful nor harmless
    assert check(ANALYSIS, obs(40, 20, n=1000)).verdict is Verdict.INCONCLUSIVE


def test_a_worse_challenger_never_passes_and_a_healthy_one_rarely_fails() -> None:
    rng = random.Random(0)
    bad_passes = healthy_fails = 0
    for _ in range(400):
        n = rng.randrange(200, 3000)
        champ = sum(rng.random() < 0.02 for _ in range(4000))
        bad = sum(rng.random() < 0.07 for _ in range(n))
        healthy = sum(rng.random() < 0.02 for _ in range(n))
        bad_passes += check(ANALYSIS, obs(champ, bad, n=n)).verdict is Verdict.PASS
        healthy_fails += check(ANALYSIS, obs(champ, healthy, n=n)).verdict is Verdict.FAIL
    assert bad_passes == 0
    assert healthy_fails / 400 < 0.05


def test_bounds_bracket_the_observed_difference() -> None:
    evidence = error_rate_evidence(VariantStats(1000, 10), VariantStats(1000, 30), 0.01, 0.05)
    assert evidence.delta == pytest.approx(0.02)
    assert evidence.lower < evidence.delta < evidence.upper
    assert evidence.p_value < 0.5


def test_latency_fails_and_needs_data() -> None:
    assert "p99" in check(ANALYSIS, obs(0, 0, p99=250)).reasons[0]
    unknown = check(ANALYSIS, Observation(stats(4000, 0), VariantStats(1000, 0, None, scores(1000))))
    assert unknown.verdict is Verdict.INCONCLUSIVE and "latency" in " ".join(unknown.reasons)


def latency_of(n: float, slow: float, p99: float) -> Observation:
    """A challenger with `slow` of its `n` requests in the (100, 150] ms bucket, the rest under 100 ms."""
    challenger = VariantStats(n, 0, p99, scores(n), latency=((50.0, n - slow), (100.0, n - slow), (150.0, n),
                                                             (math.inf, n)))
    return Observation(stats(4000, 0), challenger)


def test_a_p99_over_the_limit_fails_only_on_evidence() -> None:
    # the canary flake of stop 35: two of a healthy challenger's first 117 requests slower than 100 ms
    noisy = check(ANALYSIS, latency_of(217, 3, 112.5))
    assert noisy.verdict is Verdict.INCONCLUSIVE and noisy.slow is not None and noisy.slow.slow == 3
    assert "no evidence of slowness yet: p99 latency 112.5 ms > 100" in " ".join(noisy.reasons)
    assert "3 of 217 requests slower" in " ".join(noisy.reasons)
    slow = check(ANALYSIS, latency_of(300, 12, 121.0))  # 4 %: its lower bound clears 1 %
    assert slow.verdict is Verdict.FAIL and slow.reasons[0].startswith("p99 latency 121.0 ms > 100")
    assert slow.slow is not None and slow.slow.lower > 0.01
    fast = check(ANALYSIS, latency_of(300, 0, 99.0))
    assert fast.verdict is Verdict.PASS and fast.slow is not None and fast.slow.slow == 0


def test_a_p99_over_the_limit_without_counts_holds() -> None:
    bare = check(ANALYSIS, Observation(stats(4000, 0), VariantStats(1000, 0, 250.0, scores(1000))))
    assert bare.verdict is Verdict.INCONCLUSIVE and "no request counts" in bare.reasons[0]


def test_faster_than_interpolates_within_the_bucket_as_histogram_quantile() -> None:
    buckets = ((50.0, 80.0), (150.0, 100.0), (math.inf, 100.0))
    assert faster_than(buckets, 100.0) == pytest.approx(90.0)
    assert faster_than(buckets, 150.0) == 100.0 and faster_than(buckets, 25.0) == pytest.approx(40.0)
    assert faster_than(buckets, 1000.0) == 100.0  # above every finite bound


def test_wilson_lower_bound() -> None:
    assert wilson_lower(0, 100, 1.645) == 0.0
    assert wilson_lower(100, 100, 1.645) == pytest.approx(0.9736, abs=1e-4)
    assert wilson_lower(10, 200, 1.645) == pytest.approx(0.0301, abs=1e-3)  # 5 %: clears 1 %
    assert wilson_lower(3, 217, 1.645) < 0.01 < 3 / 217


def test_psi_fails_only_above_its_noise_floor() -> None:
    shifted = tuple(reversed(SHAPE))
    assert "score PSI" in check(ANALYSIS, obs(0, 0, n=1000, shape=shifted)).reasons[0]
    few = Observation(stats(4000, 0), VariantStats(1000, 0, 20.0, scores(40, shifted)))
    result = check(ANALYSIS, few)
    assert result.verdict is Verdict.INCONCLUSIVE and "too few scored rows to judge PSI" in " ".join(result.reasons)


def test_psi_noise_bounds_two_samples_of_one_distribution() -> None:
    rng = random.Random(1)
    bins = range(len(SHAPE))
    over = 0
    for _ in range(300):
        a = [0.0] * len(SHAPE)
        b = [0.0] * len(SHAPE)
        for i in rng.choices(bins, SHAPE, k=3000):
            a[i] += 1
        for i in rng.choices(bins, SHAPE, k=300):
            b[i] += 1
        over += psi(a, b) > psi_noise(VariantStats(3000, 0, scores=tuple(a)), VariantStats(300, 0, scores=tuple(b)))
    assert over <= 3  # the bound is the 99.9 % quantile: 0.3 expected in 300


def test_chi2_quantile() -> None:
    assert chi2_quantile(19, 0.999) == pytest.approx(43.82, rel=0.02)
    assert chi2_quantile(9, 0.999) == pytest.approx(27.88, rel=0.02)


def test_walk_promotes_after_passing_every_step() -> None:
    passed = check(ANALYSIS, obs(0, 0))
    first = decide(SPEC, RolloutState(), passed, 0)
    assert (first.action, first.weight) == (Action.ADVANCE, 50)
    second = decide(SPEC, first.state, check(ANALYSIS, obs(0, 0, n=1200)), 30)
    assert (second.action, second.weight) == (Action.PROMOTE, 100)


def test_failure_limit_rolls_back() -> None:
    first = decide(SPEC, RolloutState(), check(ANALYSIS, obs(0, 30, n=300)), 0)
    assert first.action is Action.HOLD and first.weight == 10
    second = decide(SPEC, first.state, check(ANALYSIS, obs(0, 40, n=400)), 30)
    assert second.action is Action.ROLLBACK and second.weight == 0 and "2 failed checks" in second.reason


def test_a_failure_limit_of_one_rolls_back_on_one_failed_check_and_says_so() -> None:
    one = SPEC.model_copy(update={"analysis": SPEC.analysis.model_copy(update={"failure_limit": 1})})
    rolled_back = decide(one, RolloutState(), check(ANALYSIS, obs(0, 30, n=300)), 0)
    assert rolled_back.action is Action.ROLLBACK and rolled_back.reason.startswith("1 failed check: error rate")


def test_the_same_data_is_never_counted_twice() -> None:
    failing = check(ANALYSIS, obs(0, 30, n=300))
    first = decide(SPEC, RolloutState(), failing, 0)
    again = decide(SPEC, first.state, failing, 5)
    assert again.action is Action.HOLD and again.reason == "no new data since the last check"
    assert again.state.failed_checks == 1
    passing = check(ANALYSIS, obs(0, 0))
    advanced = decide(SPEC, RolloutState(), passing, 0)
    assert decide(SPEC, advanced.state, passing, 5).action is Action.PROMOTE  # a new step starts afresh
    assert decide(SPEC, RolloutState(last_fingerprint=passing.fingerprint), passing, 5).action is Action.HOLD


def test_hold_times_out_into_rollback_never_promotion() -> None:
    empty = CheckResult(Verdict.INCONCLUSIVE, ("too little data",))
    state = RolloutState()
    for now in (0, 30, 60, 90):
        decision = decide(SPEC, state, empty, now)
        assert decision.action is Action.HOLD
        state = decision.state
    final = decide(SPEC, state, empty, 120)
    assert final.action is Action.ROLLBACK and "no evidence within 2m" in final.reason


def test_a_failed_check_the_traffic_never_confirmed_is_named_when_the_hold_times_out() -> None:
    """One failed check, then the traffic stops: the second failure never comes, the hold runs out, and the
    rollback's reason is the failure, not only that nothing new was seen."""
    failing = check(ANALYSIS, obs(0, 30, n=300))
    state = decide(SPEC, RolloutState(), failing, 0).state
    for now in (30, 60, 90):
        decision = decide(SPEC, state, failing, now)
        assert decision.action is Action.HOLD and decision.reason == "no new data since the last check"
        state = decision.state
    final = decide(SPEC, state, failing, 150)
    assert final.action is Action.ROLLBACK
    assert final.reason.startswith("no evidence within 2m after failed check 1 (") and "error rate" in final.reason
    assert final.reason.endswith("): no new data since the last check")


def test_psi() -> None:
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    assert psi([100, 0, 0], [0, 0, 100]) > 1
    assert psi([], []) == 0.0
