"""The canary policy, pure: observations in, a verdict and a decision out. No clock, no I/O.

Each check compares challenger against champion over one interval:
- error rate: a one-sided test of H0 "challenger's error rate exceeds the champion's by at most
  max_error_rate_delta" (Wald z-test on the difference, with Agresti–Caffo's +1/+1 adjustment so
  zero-error samples don't give zero variance). A bare threshold would roll back on noise at low
  traffic and miss real regressions at high traffic; the test scales with the evidence.
- latency: the challenger's p99 must stay under max_p99_latency_ms.
- score divergence: PSI between the two variants' score distributions under max_score_psi.
Too few requests on either side is INCONCLUSIVE: the rollout holds, and rolls back when the hold
outlasts hold_timeout. It never promotes without evidence (Flagger and Argo Rollouts are criticised
for judging on empty data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from ferry.spec.models import Analysis, RolloutSpec

PSI_EPSILON = 1e-4


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Action(StrEnum):
    ADVANCE = "advance"
    HOLD = "hold"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class VariantStats:
    requests: float
    errors: float
    p99_latency_ms: float | None = None


@dataclass(frozen=True)
class Observation:
    champion: VariantStats
    challenger: VariantStats
    score_psi: float | None = None


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    reasons: tuple[str, ...]
    error_rate_delta: float = 0.0
    p_value: float = 1.0


@dataclass(frozen=True)
class RolloutState:
    step_index: int = 0
    failed_checks: int = 0
    holding_since_s: float | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    state: RolloutState
    weight: int
    reason: str


def error_rate_test(champion: VariantStats, challenger: VariantStats, margin: float) -> tuple[float, float]:
    """(observed delta, one-sided p-value) for H0: challenger_rate - champion_rate <= margin."""
    n_c, n_h = champion.requests + 2, challenger.requests + 2
    p_c, p_h = (champion.errors + 1) / n_c, (challenger.errors + 1) / n_h
    delta = challenger.errors / max(challenger.requests, 1) - champion.errors / max(champion.requests, 1)
    se = math.sqrt(p_c * (1 - p_c) / n_c + p_h * (1 - p_h) / n_h)
    z = ((p_h - p_c) - margin) / se
    return delta, 0.5 * math.erfc(z / math.sqrt(2))


def check(analysis: Analysis, obs: Observation) -> CheckResult:
    short = [f"{name} has {stats.requests:.0f} requests (< {analysis.min_requests})"
             for name, stats in (("champion", obs.champion), ("challenger", obs.challenger))
             if stats.requests < analysis.min_requests]
    if short:
        return CheckResult(Verdict.INCONCLUSIVE, ("too little data: " + "; ".join(short),))
    delta, p_value = error_rate_test(obs.champion, obs.challenger, analysis.max_error_rate_delta)
    failures = []
    if p_value < analysis.significance:
        failures.append(f"error rate +{delta:.4f} exceeds +{analysis.max_error_rate_delta} (p={p_value:.2g})")
    p99 = obs.challenger.p99_latency_ms
    if p99 is not None and p99 > analysis.max_p99_latency_ms:
        failures.append(f"p99 latency {p99:.1f} ms > {analysis.max_p99_latency_ms} ms")
    if obs.score_psi is not None and obs.score_psi > analysis.max_score_psi:
        failures.append(f"score PSI {obs.score_psi:.3f} > {analysis.max_score_psi}")
    if failures:
        return CheckResult(Verdict.FAIL, tuple(failures), delta, p_value)
    return CheckResult(Verdict.PASS, (f"error rate {delta:+.4f} (p={p_value:.2g}), within limits",), delta, p_value)


def decide(spec: RolloutSpec, state: RolloutState, result: CheckResult, now_s: float) -> Decision:
    """The next move after one check. `now_s` is any monotonic clock reading (the caller's)."""
    weight = spec.steps[state.step_index]
    reason = "; ".join(result.reasons)
    if result.verdict is Verdict.FAIL:
        failed = replace(state, failed_checks=state.failed_checks + 1, holding_since_s=None)
        if failed.failed_checks >= spec.analysis.failure_limit:
            return Decision(Action.ROLLBACK, failed, 0, f"{failed.failed_checks} failed checks: {reason}")
        return Decision(Action.HOLD, failed, weight, f"failed check {failed.failed_checks}: {reason}")
    if result.verdict is Verdict.INCONCLUSIVE:
        since = state.holding_since_s if state.holding_since_s is not None else now_s
        if now_s - since >= parse_duration_s(spec.hold_timeout):
            return Decision(Action.ROLLBACK, state, 0, f"no evidence within {spec.hold_timeout}: {reason}")
        return Decision(Action.HOLD, replace(state, holding_since_s=since), weight, reason)
    advanced = replace(state, step_index=state.step_index + 1, holding_since_s=None)
    if advanced.step_index >= len(spec.steps) - 1:
        return Decision(Action.PROMOTE, advanced, 100, f"passed at {weight}%: {reason}")
    return Decision(Action.ADVANCE, advanced, spec.steps[advanced.step_index], reason)


def parse_duration_s(text: str) -> float:
    value, unit = int(text.rstrip("mshd")), text.lstrip("0123456789")
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index between two histograms over the same bins (counts or shares)."""
    total_e, total_a = sum(expected), sum(actual)
    if total_e <= 0 or total_a <= 0:
        return 0.0
    value = 0.0
    for e, a in zip(expected, actual, strict=True):
        share_e, share_a = max(e / total_e, PSI_EPSILON), max(a / total_a, PSI_EPSILON)
        value += (share_a - share_e) * math.log(share_a / share_e)
    return value
