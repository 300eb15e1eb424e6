"""The canary policy: evidence-based verdicts, never promote on empty data, bounded holds."""

from __future__ import annotations

import random

from ferry.rollout.policy import (
    Action,
    CheckResult,
    Observation,
    RolloutState,
    VariantStats,
    Verdict,
    check,
    decide,
    error_rate_test,
    psi,
)
from ferry.spec.models import Analysis, RolloutSpec

ANALYSIS = Analysis(max_error_rate_delta=0.01, significance=0.05, max_p99_latency_ms=100, max_score_psi=0.2,
                    min_requests=200, failure_limit=2)
SPEC = RolloutSpec(steps=[10, 50, 100], interval="30s", hold_timeout="2m", analysis=ANALYSIS)


def obs(champ_err: int, chal_err: int, n: int = 1000, p99: float = 20.0, score_psi: float = 0.01) -> Observation:
    return Observation(VariantStats(n, champ_err, 20.0), VariantStats(n, chal_err, p99), score_psi)


def test_too_little_data_is_inconclusive() -> None:
    result = check(ANALYSIS, Observation(VariantStats(1000, 0), VariantStats(50, 40)))
    assert result.verdict is Verdict.INCONCLUSIVE and "challenger has 50" in result.reasons[0]


def test_error_regression_fails_and_noise_passes() -> None:
    assert check(ANALYSIS, obs(10, 70)).verdict is Verdict.FAIL
    assert check(ANALYSIS, obs(10, 14)).verdict is Verdict.PASS
    assert check(ANALYSIS, obs(0, 0)).verdict is Verdict.PASS


def test_statistical_test_holds_its_level_for_a_healthy_challenger() -> None:
    rng = random.Random(0)
    false_alarms = 0
    for _ in range(500):
        champ = sum(rng.random() < 0.02 for _ in range(400))
        chal = sum(rng.random() < 0.02 for _ in range(400))
        _, p = error_rate_test(VariantStats(400, champ), VariantStats(400, chal), 0.01)
        false_alarms += p < 0.05
    assert false_alarms / 500 < 0.05


def test_latency_and_psi_fail() -> None:
    assert "p99" in check(ANALYSIS, obs(1, 1, p99=250)).reasons[0]
    assert "PSI" in check(ANALYSIS, obs(1, 1, score_psi=0.5)).reasons[0]


def test_walk_promotes_after_passing_every_step() -> None:
    state, passed = RolloutState(), CheckResult(Verdict.PASS, ("ok",))
    first = decide(SPEC, state, passed, 0)
    assert (first.action, first.weight) == (Action.ADVANCE, 50)
    second = decide(SPEC, first.state, passed, 30)
    assert (second.action, second.weight) == (Action.PROMOTE, 100)


def test_failure_limit_rolls_back() -> None:
    failed = CheckResult(Verdict.FAIL, ("error rate",))
    first = decide(SPEC, RolloutState(), failed, 0)
    assert first.action is Action.HOLD and first.weight == 10
    second = decide(SPEC, first.state, failed, 30)
    assert second.action is Action.ROLLBACK and second.weight == 0 and "2 failed checks" in second.reason


def test_hold_times_out_into_rollback_never_promotion() -> None:
    empty = CheckResult(Verdict.INCONCLUSIVE, ("too little data",))
    state = RolloutState()
    for now in (0, 30, 60, 90):
        decision = decide(SPEC, state, empty, now)
        assert decision.action is Action.HOLD
        state = decision.state
    final = decide(SPEC, state, empty, 120)
    assert final.action is Action.ROLLBACK and "no evidence within 2m" in final.reason


def test_psi() -> None:
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    assert psi([100, 0, 0], [0, 0, 100]) > 1
    assert psi([], []) == 0.0
