"""The canary policy, pure: observations in, a verdict and a decision out. No clock, no I/O.

Each check compares challenger against champion on the requests served since the current weight step
began (the observer's job: exact counter differences, no extrapolation):
- error rate: the difference challenger - champion with an Agresti–Caffo (+1/+1) Wald interval, one-sided
  at `significance` on each side. FAIL when its lower bound is above max_error_rate_delta (evidence of
  harm); PASS only when its upper bound is below it (evidence of no harm); anything between is not yet
  known and holds. A bare threshold would roll back on noise at low traffic and miss real regressions at
  high traffic, and "could not reject" is not evidence: with few requests a 5-point regression often
  cannot be rejected, and promoting it is exactly what a canary is for.
- latency: the challenger's p99 must stay under max_p99_latency_ms, i.e. at most 1 % of its requests may be
  slower. FAIL when the share slower than the limit (from the latency histogram, interpolated within a bucket
  as `histogram_quantile` does) has a Wilson lower bound above 1 %, one-sided at `significance` (evidence of
  harm); a p99 over the limit without that evidence holds for more data. The p99 of the ~100 requests a
  first step sees is their second-slowest: two requests delayed by a busy host would otherwise roll back a
  healthy challenger whose champion, judged over 4x the requests, stays under the same limit.
- score divergence: PSI between the two variants' score histograms under max_score_psi, judged only
  when each side holds enough rows that sampling noise alone stays under the limit (PSI of two samples of
  one distribution is about chi-square(bins - 1) × (1/n1 + 1/n2)); below that it is inconclusive. It stands in
  for outcomes: when labels judge the challenger not worse (`with_outcomes`), they outrank it.
Too few requests on either side is INCONCLUSIVE. A check whose data has not moved since the previous
check (the metrics path refreshes every 10-20 s, the controller may look more often) is STALE: it holds
and never counts as a pass or a failure a second time. A hold that outlasts hold_timeout rolls back:
the policy never promotes without evidence (Flagger and Argo Rollouts are criticised for judging on
empty data).

With `rollout.shadow` the first step is a shadow stage at weight 0, judged by `shadow_check` (the challenger's
failures in shadow); with `rollout.outcomes` every check also carries the judgement on labels
(ferry.rollout.outcomes) and `with_outcomes` keeps the worse verdict of the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from statistics import NormalDist
from typing import Any, Protocol

from ferry.contract import metrics
from ferry.contract.durations import parse_duration_s
from ferry.contract.psi import psi
from ferry.spec.models import Analysis, RolloutSpec

SLOW_SHARE = 1 - 0.99  # a p99 under the limit lets this share of requests be slower
PSI_NOISE_QUANTILE = 0.999  # a healthy challenger's PSI stays under the noise bound in 999 checks of 1000
# The chi-square approximation is thin-tailed for sparse bins (a bin empty on one side meets PSI's epsilon
# floor): by simulation with 12-20 bins, 150-1000 rows, the true 99.9 % quantile is up to 1.57 × it.
PSI_SPARSE_FACTOR = 1.6


class Verdict(StrEnum):
    PASS = metrics.VERDICT_PASS
    FAIL = metrics.VERDICT_FAIL
    INCONCLUSIVE = metrics.VERDICT_INCONCLUSIVE
    STALE = metrics.VERDICT_STALE


class Action(StrEnum):
    ADVANCE = metrics.ACTION_ADVANCE
    HOLD = metrics.ACTION_HOLD
    PROMOTE = metrics.ACTION_PROMOTE
    ROLLBACK = metrics.ACTION_ROLLBACK


@dataclass(frozen=True)
class VariantStats:
    requests: float
    errors: float
    p99_latency_ms: float | None = None
    scores: tuple[float, ...] = ()  # rows per score-histogram bin, the same bins for both variants
    latency: tuple[tuple[float, float], ...] = ()  # cumulative latency histogram: (le ms, requests), le ascending

    @property
    def scored(self) -> float:
        return sum(self.scores)


@dataclass(frozen=True)
class Observation:
    champion: VariantStats
    challenger: VariantStats

    @property
    def score_psi(self) -> float | None:
        a, b = self.champion.scores, self.challenger.scores
        if not a or len(a) != len(b) or sum(a) <= 0 or sum(b) <= 0:
            return None
        return psi(a, b)

    def fingerprint(self) -> tuple[float, ...]:
        """What moves when new data arrives: two checks with the same fingerprint saw the same scrape."""
        return (self.champion.requests, self.champion.errors, self.challenger.requests, self.challenger.errors)


@dataclass(frozen=True)
class ErrorRateEvidence:
    delta: float  # observed challenger - champion error rate
    lower: float  # one-sided confidence bounds of the difference (Agresti–Caffo)
    upper: float
    p_value: float  # of H0: difference <= margin (small: evidence of harm)


class OutcomeEvidence(Protocol):
    """What the policy reads of a judgement on labels (ferry.rollout.outcomes.OutcomeEvidence)."""

    @property
    def verdict(self) -> Verdict: ...
    @property
    def reasons(self) -> tuple[str, ...]: ...
    @property
    def labelled(self) -> int: ...
    def record(self) -> dict[str, Any]: ...
    def bounds(self) -> dict[str, tuple[float, float, float]]: ...


@dataclass(frozen=True)
class LatencyEvidence:
    slow: float  # requests slower than the limit (interpolated within its bucket)
    timed: float  # requests in the latency histogram
    lower: float  # one-sided Wilson lower bound of the slow share

    @property
    def share(self) -> float:
        return self.slow / self.timed if self.timed else 0.0


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    reasons: tuple[str, ...]
    error: ErrorRateEvidence | None = None
    score_psi: float | None = None
    psi_noise: float | None = None  # PSI that two samples of one distribution this size reach by chance
    observation: Observation | None = None
    outcomes: OutcomeEvidence | None = None  # the judgement on labels (ferry.rollout.outcomes), when asked for
    shadow_rows: tuple[float, float] | None = None  # (scored, failed) in shadow, at a shadow stage
    without_psi: tuple[Verdict, tuple[str, ...]] | None = None  # the traffic check with score PSI left out
    slow: LatencyEvidence | None = None  # the challenger's requests over the latency limit

    @property
    def fingerprint(self) -> tuple[float, ...]:
        found = self.observation.fingerprint() if self.observation else ()
        if self.shadow_rows is not None:
            found += self.shadow_rows
        return found + ((float(self.outcomes.labelled),) if self.outcomes is not None else ())

    @property
    def error_rate_delta(self) -> float:
        return self.error.delta if self.error else 0.0

    @property
    def p_value(self) -> float:
        return self.error.p_value if self.error else 1.0


@dataclass(frozen=True)
class RolloutState:
    step_index: int = 0
    failed_checks: int = 0
    holding_since_s: float | None = None
    last_fingerprint: tuple[float, ...] = field(default=())
    last_failure: str = ""  # the reason of the last failed check, for a hold that times out after it


@dataclass(frozen=True)
class Decision:
    action: Action
    state: RolloutState
    weight: int
    reason: str


def error_rate_evidence(champion: VariantStats, challenger: VariantStats, margin: float,
                        significance: float) -> ErrorRateEvidence:
    """Bounds on challenger - champion error rate, one-sided at `significance` each (Agresti–Caffo +1/+1,
    which keeps zero-error samples from claiming zero variance)."""
    n_c, n_h = champion.requests + 2, challenger.requests + 2
    p_c, p_h = (champion.errors + 1) / n_c, (challenger.errors + 1) / n_h
    delta = challenger.errors / max(challenger.requests, 1) - champion.errors / max(champion.requests, 1)
    se = math.sqrt(p_c * (1 - p_c) / n_c + p_h * (1 - p_h) / n_h)
    z = NormalDist().inv_cdf(1 - significance)
    adjusted = p_h - p_c
    p_value = 0.5 * math.erfc(((adjusted - margin) / se) / math.sqrt(2))
    return ErrorRateEvidence(delta, adjusted - z * se, adjusted + z * se, p_value)


def faster_than(latency: tuple[tuple[float, float], ...], limit_ms: float) -> float:
    """Requests at or under `limit_ms` in a cumulative histogram, linear within the bucket holding the limit
    (the interpolation `histogram_quantile` uses, so for a limit under the top finite bound this count falls
    under 99 % exactly when the p99 of the same buckets exceeds the limit)."""
    lower_le, lower_count = 0.0, 0.0
    for le, count in latency:
        if le >= limit_ms:
            if math.isinf(le):
                return lower_count  # the limit is above every finite bound: the p99 is reported as at most it
            return lower_count + (count - lower_count) * (limit_ms - lower_le) / (le - lower_le)
        lower_le, lower_count = le, count
    return lower_count


def latency_evidence(stats: VariantStats, limit_ms: float, significance: float) -> LatencyEvidence | None:
    """How many of the variant's requests were slower than `limit_ms`, and a lower bound on their share."""
    if not stats.latency or stats.latency[-1][1] <= 0:
        return None
    timed = stats.latency[-1][1]
    slow = max(timed - faster_than(stats.latency, limit_ms), 0.0)
    return LatencyEvidence(slow, timed, wilson_lower(slow, timed, NormalDist().inv_cdf(1 - significance)))


def wilson_lower(successes: float, trials: float, z: float) -> float:
    """The Wilson score interval's lower bound: unlike the Wald bound, sound for the handful of slow requests
    a p99 check is about."""
    share, z2 = successes / trials, z * z
    centre = share + z2 / (2 * trials)
    spread = z * math.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials))
    return max((centre - spread) / (1 + z2 / trials), 0.0)


def chi2_quantile(dof: int, q: float) -> float:
    """Wilson–Hilferty approximation of the chi-square quantile (within a few % for dof >= 3)."""
    z = NormalDist().inv_cdf(q)
    k = max(dof, 1)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def psi_noise(champion: VariantStats, challenger: VariantStats) -> float:
    """The PSI two samples of one distribution this size exceed only 1 time in 1000 (bins either side uses)."""
    if champion.scored <= 0 or challenger.scored <= 0 or len(champion.scores) != len(challenger.scores):
        return math.inf
    bins = sum(1 for a, b in zip(champion.scores, challenger.scores, strict=True) if a > 0 or b > 0)
    return PSI_SPARSE_FACTOR * chi2_quantile(bins - 1, PSI_NOISE_QUANTILE) * (1 / champion.scored
                                                                              + 1 / challenger.scored)


def check(analysis: Analysis, obs: Observation) -> CheckResult:
    short = [f"{name} has {stats.requests:.0f} requests (< {analysis.min_requests})"
             for name, stats in (("champion", obs.champion), ("challenger", obs.challenger))
             if stats.requests < analysis.min_requests]
    if short:
        return CheckResult(Verdict.INCONCLUSIVE, ("too little data: " + "; ".join(short),),
                           observation=obs)
    error = error_rate_evidence(obs.champion, obs.challenger, analysis.max_error_rate_delta, analysis.significance)
    score_psi, noise = obs.score_psi, psi_noise(obs.champion, obs.challenger)
    slow = latency_evidence(obs.challenger, analysis.max_p99_latency_ms, analysis.significance)
    failures, unknown = _failures(analysis, obs, error, slow), _unknowns(analysis, obs, error, slow)
    without_psi = _verdict(failures, unknown, lambda: f"{_within(analysis, obs, error)}: within limits")
    psi_failure, psi_unknown = _psi(analysis, obs, score_psi, noise)
    verdict, reasons = _verdict(failures + psi_failure, unknown + psi_unknown,
                                lambda: f"{_within(analysis, obs, error)}, score PSI {score_psi:.3f}: within limits")
    return CheckResult(verdict, reasons, error, score_psi, noise, obs, without_psi=without_psi, slow=slow)


def _within(analysis: Analysis, obs: Observation, error: ErrorRateEvidence) -> str:
    return (f"error rate {error.delta:+.4f} (upper bound {error.upper:+.4f} < +{analysis.max_error_rate_delta}), "
            f"p99 {obs.challenger.p99_latency_ms:.1f} ms")


def _verdict(failures: list[str], unknown: list[str], passed: Callable[[], str]) -> tuple[Verdict, tuple[str, ...]]:
    """`passed` is called only on a pass, when the figures it names are known."""
    if failures:
        return Verdict.FAIL, tuple(failures)
    return (Verdict.INCONCLUSIVE, tuple(unknown)) if unknown else (Verdict.PASS, (passed(),))


def _failures(analysis: Analysis, obs: Observation, error: ErrorRateEvidence,
              slow: LatencyEvidence | None) -> list[str]:
    failures = []
    if error.lower > analysis.max_error_rate_delta:
        failures.append(f"error rate {error.delta:+.4f} exceeds +{analysis.max_error_rate_delta} "
                        f"(lower bound {error.lower:+.4f}, p={error.p_value:.2g})")
    p99 = obs.challenger.p99_latency_ms
    if p99 is not None and p99 > analysis.max_p99_latency_ms and slow is not None and slow.lower > SLOW_SHARE:
        failures.append(f"p99 latency {p99:.1f} ms > {analysis.max_p99_latency_ms} ms ({_slow(slow)}: lower bound "
                        f"{slow.lower:.1%} > {SLOW_SHARE:.0%})")
    return failures


def _slow(slow: LatencyEvidence) -> str:
    return f"{slow.slow:.0f} of {slow.timed:.0f} requests slower"


def _unknowns(analysis: Analysis, obs: Observation, error: ErrorRateEvidence,
              slow: LatencyEvidence | None) -> list[str]:
    unknown = []
    if error.upper >= analysis.max_error_rate_delta:
        unknown.append(f"no evidence of no harm yet: error rate {error.delta:+.4f}, upper bound "
                       f"{error.upper:+.4f} >= +{analysis.max_error_rate_delta} "
                       f"({obs.challenger.errors:.0f}/{obs.challenger.requests:.0f} vs "
                       f"{obs.champion.errors:.0f}/{obs.champion.requests:.0f})")
    p99 = obs.challenger.p99_latency_ms
    if p99 is None:
        unknown.append("no challenger latency data")
    elif p99 > analysis.max_p99_latency_ms and slow is None:
        unknown.append(f"p99 latency {p99:.1f} ms > {analysis.max_p99_latency_ms} ms, no request counts to judge it by")
    elif p99 > analysis.max_p99_latency_ms and slow is not None and slow.lower <= SLOW_SHARE:
        unknown.append(f"no evidence of slowness yet: p99 latency {p99:.1f} ms > {analysis.max_p99_latency_ms} ms "
                       f"({_slow(slow)}: lower bound {slow.lower:.1%} <= {SLOW_SHARE:.0%})")
    return unknown


def _psi(analysis: Analysis, obs: Observation, score_psi: float | None, noise: float) -> tuple[list[str], list[str]]:
    """(failures, unknowns) of the score-PSI check between the variants."""
    if noise > analysis.max_score_psi:
        return [], [f"too few scored rows to judge PSI ({obs.challenger.scored:.0f} challenger, "
                    f"{obs.champion.scored:.0f} champion: chance alone reaches {noise:.2f})"]
    if score_psi is not None and score_psi > analysis.max_score_psi:
        return [f"score PSI {score_psi:.3f} > {analysis.max_score_psi}"], []
    return [], []


def shadow_check(analysis: Analysis, scored: float, failed: float) -> CheckResult:
    """A shadow stage's traffic check: the challenger answers nobody, so what it can show is that it scores the
    mirrored rows without failing (its failures are judged like a served error rate against zero)."""
    rows = (scored, failed)
    if scored + failed < analysis.min_requests:
        return CheckResult(Verdict.INCONCLUSIVE, (f"too little data: {scored + failed:.0f} rows scored in shadow "
                                                  f"(< {analysis.min_requests})",), shadow_rows=rows)
    clean = VariantStats(scored + failed, 0.0)
    error = error_rate_evidence(clean, VariantStats(scored + failed, failed), analysis.max_error_rate_delta,
                                analysis.significance)
    if error.lower > analysis.max_error_rate_delta:
        return CheckResult(Verdict.FAIL, (f"the challenger failed {failed:.0f} of {scored + failed:.0f} shadow "
                                          f"scores (lower bound {error.lower:+.4f})",), error, shadow_rows=rows)
    if error.upper >= analysis.max_error_rate_delta:
        return CheckResult(Verdict.INCONCLUSIVE, (f"no evidence of no harm yet: {failed:.0f} of {scored + failed:.0f}"
                                                  " shadow scores failed",), error, shadow_rows=rows)
    return CheckResult(Verdict.PASS, (f"{scored:.0f} shadow scores, {failed:.0f} failed",), error, shadow_rows=rows)


def with_outcomes(result: CheckResult, evidence: OutcomeEvidence) -> CheckResult:
    """The check on traffic and on labels together: the worse verdict, with the reasons that made it. Labels
    outrank score PSI: PSI between the variants stands in for outcomes while labels are too few, but once they
    judge the challenger not worse, scores that moved are what a model retrained on drift is for (such a retrain,
    far better on labels, scores the drifted payments unlike the champion it replaces)."""
    if evidence.verdict is Verdict.PASS and result.without_psi is not None and result.verdict is not Verdict.PASS:
        traffic_verdict, kept = result.without_psi
        outranked = tuple(f"{reason} (outranked by the labels)" for reason in result.reasons if reason not in kept)
        result = replace(result, verdict=traffic_verdict, reasons=(*kept, *outranked))
    order = (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.PASS)
    verdict = min(result.verdict, evidence.verdict, key=order.index)
    reasons = [*(result.reasons if result.verdict is verdict else ()),
               *(evidence.reasons if evidence.verdict is verdict else ())]
    return replace(result, verdict=verdict, reasons=tuple(reasons), outcomes=evidence)


def decide(spec: RolloutSpec, state: RolloutState, result: CheckResult, now_s: float) -> Decision:
    """The next move after one check. `now_s` is any monotonic clock reading (the caller's)."""
    weight = spec.steps[state.step_index]
    result = staleness(result, state)
    reason = "; ".join(result.reasons)
    seen = replace(state, last_fingerprint=result.fingerprint or state.last_fingerprint)
    if result.verdict is Verdict.FAIL:
        failed = replace(seen, failed_checks=seen.failed_checks + 1, holding_since_s=None, last_failure=reason)
        if failed.failed_checks >= spec.analysis.failure_limit:
            plural = "s" if failed.failed_checks != 1 else ""  # failure_limit 1 rolls back on one
            return Decision(Action.ROLLBACK, failed, 0, f"{failed.failed_checks} failed check{plural}: {reason}")
        return Decision(Action.HOLD, failed, weight, f"failed check {failed.failed_checks}: {reason}")
    if result.verdict in (Verdict.INCONCLUSIVE, Verdict.STALE):
        since = seen.holding_since_s if seen.holding_since_s is not None else now_s
        if now_s - since >= parse_duration_s(spec.hold_timeout):
            return Decision(Action.ROLLBACK, seen, 0, timed_out(spec, seen, reason))
        return Decision(Action.HOLD, replace(seen, holding_since_s=since), weight, reason)
    advanced = RolloutState(step_index=state.step_index + 1, failed_checks=state.failed_checks,
                            last_failure=state.last_failure)
    if advanced.step_index >= len(spec.steps) - 1:
        return Decision(Action.PROMOTE, advanced, 100, f"passed at {weight}%: {reason}")
    return Decision(Action.ADVANCE, advanced, spec.steps[advanced.step_index], reason)


def timed_out(spec: RolloutSpec, state: RolloutState, reason: str) -> str:
    """A hold's rollback reason. A failed check that no new data confirmed or cleared (the traffic stopped after
    it) is what the on-call needs to read, not only that the later checks saw nothing new."""
    if not state.failed_checks:
        return f"no evidence within {spec.hold_timeout}: {reason}"
    return (f"no evidence within {spec.hold_timeout} after failed check {state.failed_checks} "
            f"({state.last_failure}): {reason}")


def staleness(result: CheckResult, state: RolloutState) -> CheckResult:
    """The result as `decide` will judge it: STALE when its data is the previous check's."""
    if result.fingerprint and result.fingerprint == state.last_fingerprint:
        return replace(result, verdict=Verdict.STALE, reasons=("no new data since the last check",))
    return result

