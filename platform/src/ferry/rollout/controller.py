"""The canary controller: the only writer of rollout state (aliases and the challenger's weight tag).

It walks the spec's weight steps; at each interval it observes both variants in Prometheus on the
traffic since the current step began, asks the pure policy for a decision, records the check on the
model version (tags) and in Prometheus metrics, and moves the weight (the terminal writes live in
ferry.rollout.actions). A check that finds the same data as the previous one (the metrics path, Ray's
10 s export plus the scrape, is slower than a short interval) is stale: counted in the metrics, never a
second pass or failure, and not tagged unless it ends the rollout.

MLflow down (serving keeps the last known aliases meanwhile):
- a check record that cannot be written is kept and written with the next one, at a later interval;
- an ADVANCE whose weight tag cannot be written did not happen: the controller holds on the current step
  (its data still counting from the step's start) and advances at a later passing check once the write
  lands, so the policy state never runs ahead of the weight the router reads;
- the start (reading the aliases, then tagging and naming the challenger) and the terminal writes
  (promote, rollback: ferry.rollout.actions orders them so every partial state is consistent) retry with
  capped backoff for `registry_timeout_s` (default max(hold_timeout, 10 min)). Past it the start raises
  RegistryUnavailable (nothing moved: safe to rerun) and a terminal write raises RolloutStuck, whose message
  says where the aliases are and how to finish by hand.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace as evolve
from typing import Any, Protocol

from ferry.adapters.prometheus_port import PrometheusQuery, PrometheusUnavailable
from ferry.adapters.registry_port import RegistryError, RegistryPort, RegistryUnavailable, RolloutView
from ferry.contract import names
from ferry.contract.errors import FerryError
from ferry.rollout import actions
from ferry.rollout.metrics import RolloutMetrics
from ferry.rollout.observe import observe
from ferry.rollout.outcomes import OutcomeEvidence, OutcomeSource, OutcomesUnavailable, PairedSample, judge
from ferry.rollout.policy import (
    Action,
    CheckResult,
    Decision,
    Observation,
    RolloutState,
    Verdict,
    check,
    decide,
    parse_duration_s,
    shadow_check,
    staleness,
    with_outcomes,
)
from ferry.spec.models import ModelSpec

Observe = Callable[[str, str, float], Observation]  # (champion, challenger, since unix time)
TERMINAL = (Action.PROMOTE, Action.ROLLBACK)
# After a weight change the first samples can still carry up to one Ray export interval (10 s by default)
# of traffic served at the previous weight: later steps start counting that much after the change. The
# first step needs none: the challenger served nothing before it.
SETTLE_S = 10.0
MIN_REGISTRY_TIMEOUT_S = 600.0
MAX_BACKOFF_S = 30.0
# What the registry port raises when MLflow is unreachable, failing, or refuses a write (the last is retried
# too, as it always was: the bound ends it); anything else is a bug and surfaces at once. Past the bound the
# start raises the port's RegistryUnavailable itself: the registry stayed unreachable before the rollout
# changed anything serving reads, so the step is safe to rerun.
REGISTRY_ERRORS = (RegistryError,)
log = logging.getLogger(__name__)


class RolloutStuck(FerryError):
    """A promote or rollback could not be written within the bound; the message says how to finish it."""


class _GaveUp(Exception):  # internal: carries the last registry error out of the retry loop, never shown
    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Clock(Protocol):
    def now(self) -> float: ...
    def time(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class RolloutOutcome:
    action: Action
    version: str
    reason: str
    checks: int


def prometheus_observer(prom: PrometheusQuery, model: str) -> Observe:
    def run(champion: str, challenger: str, since_unix: float) -> Observation:
        return observe(prom, model, champion, challenger, since_unix)

    return run


class Controller:
    def __init__(self, registry: RegistryPort, spec: ModelSpec, observer: Observe, clock: Clock | None = None,
                 metrics: RolloutMetrics | None = None, settle_s: float = SETTLE_S,
                 registry_timeout_s: float | None = None, outcomes: OutcomeSource | None = None) -> None:
        self.registry, self.spec, self.observer = registry, spec, observer
        self.outcomes = outcomes  # the labelled, paired transactions (shadow stage and rollout.outcomes)
        self._judged: tuple[tuple[int, int], OutcomeEvidence] | None = None
        self.clock = clock or RealClock()
        self.settle_s = settle_s
        self.metrics = metrics or RolloutMetrics()
        self.model = spec.metadata.name
        hold_timeout = parse_duration_s(spec.spec.rollout.hold_timeout)
        self.registry_timeout_s = (max(hold_timeout, MIN_REGISTRY_TIMEOUT_S) if registry_timeout_s is None
                                   else registry_timeout_s)
        self.pending: dict[str, str] = {}  # check records not yet written, by tag

    def run(self, version: str) -> RolloutOutcome:
        champion = self._read_view().champion
        if champion is None or champion == version:
            reason = "first version: nothing to compare against"
            self._finish(Action.PROMOTE, version, None, reason)
            return RolloutOutcome(Action.PROMOTE, version, "first version", 0)
        return self._walk(version, champion)

    def _walk(self, version: str, champion: str) -> RolloutOutcome:
        rollout = self.spec.spec.rollout
        if rollout.shadow is not None:  # the shadow stage is a first step at weight 0
            rollout = rollout.model_copy(update={"steps": [0, *rollout.steps]})
        state = RolloutState()
        self._start(version, champion, rollout.steps[0])
        since = started = self.clock.time()  # the first step counts from the moment the challenger can be reached
        shadow_until = self.clock.now() + (parse_duration_s(rollout.shadow.duration) if rollout.shadow else 0.0)
        interval = parse_duration_s(rollout.interval)
        checks = 0
        while True:
            self.clock.sleep(interval)
            result = staleness(self._check(champion, version, since, started, rollout.steps[state.step_index]),
                               state)
            decision = decide(rollout, state, result, self.clock.now())
            if state.step_index == 0 and self.clock.now() < shadow_until and decision.action is not Action.ROLLBACK:
                decision = _shadowing(state, result, decision, shadow_until - self.clock.now())
            if decision.action is Action.ADVANCE:
                decision = self._advance(version, state, decision)
            if result.verdict is not Verdict.STALE or decision.action is not Action.HOLD:
                checks += 1
                self.pending[f"{names.TAG_ROLLOUT_CHECK_PREFIX}{checks:03d}"] = json.dumps(
                    check_record(result, decision, since, self.clock.time()), sort_keys=True)
            self.metrics.check(self.model, version, result, decision)
            state = decision.state
            if decision.action is Action.ADVANCE:
                since = self.clock.time() + self.settle_s
            if decision.action in TERMINAL:
                self._finish(decision.action, version, champion, decision.reason)
                return RolloutOutcome(decision.action, version, decision.reason, checks)
            self._flush(version)

    def _check(self, champion: str, version: str, since: float, started: float, weight: int) -> CheckResult:
        """The step's check: on traffic since `since` (in shadow: the shadow scores), and on the labels of
        everything both models scored since the rollout `started`, when the spec judges outcomes."""
        rollout = self.spec.spec.rollout
        sample, unread = self._sample(champion, version, started)
        if weight == 0:
            result = (shadow_check(rollout.analysis, sample.shadow_rows - sample.shadow_failures,
                                   sample.shadow_failures) if sample is not None
                      else CheckResult(Verdict.INCONCLUSIVE, (unread,)))
        else:
            result = self._traffic(champion, version, since)
        if rollout.outcomes is None or self.outcomes is None:
            return result
        if sample is None:  # no judgement without the log: hold (an outage past hold_timeout rolls back)
            return CheckResult(Verdict.INCONCLUSIVE, (*result.reasons, unread) if weight else (unread,),
                               observation=result.observation)
        return with_outcomes(result, self._judge(sample))

    def _judge(self, sample: PairedSample) -> OutcomeEvidence:
        """The judgement on labels, computed again only when labels came in since the last one (its bootstrap
        costs seconds, and a check every interval finds the same labels most of the time)."""
        assert self.spec.spec.rollout.outcomes is not None and self.outcomes is not None
        seen = (sample.labelled, sample.positives)
        if self._judged is None or self._judged[0] != seen:
            self._judged = (seen, judge(self.spec.spec.rollout.outcomes, sample, self.outcomes.evaluate))
        return self._judged[1]

    def _traffic(self, champion: str, version: str, since: float) -> CheckResult:
        if self.clock.time() < since:
            return CheckResult(Verdict.INCONCLUSIVE, ("the new weight's metrics are not in yet",))
        try:
            return check(self.spec.spec.rollout.analysis, self.observer(champion, version, since))
        except PrometheusUnavailable as exc:
            return CheckResult(Verdict.INCONCLUSIVE, (f"no metrics: {exc}",))

    def _sample(self, champion: str, version: str, started: float) -> tuple[PairedSample | None, str]:
        if self.outcomes is None:
            return None, "no prediction log to read shadow scores and labels from"
        try:
            return self.outcomes.sample(champion, version, started), ""
        except OutcomesUnavailable as exc:
            return None, f"cannot read the prediction log: {exc}"

    def _read_view(self) -> RolloutView:
        deadline = self.clock.now() + self.registry_timeout_s
        try:
            view: RolloutView = self._persist(deadline, "reading the aliases", self.registry.rollout_view,
                                              self.model)
        except _GaveUp as exc:
            raise RegistryUnavailable(
                f"could not read the aliases of {self.model} from MLflow within {self.registry_timeout_s:.0f} s "
                f"({exc.cause}); nothing was changed: rerun the step once MLflow is reachable") from None
        return view

    def _start(self, version: str, champion: str, weight: int) -> None:
        deadline = self.clock.now() + self.registry_timeout_s
        try:
            shadow = self.spec.spec.rollout.shadow
            tags: dict[str, object] = {names.TAG_ROLLOUT_STATE: names.STATE_CANARY, names.TAG_ROLLOUT_WEIGHT: weight}
            if shadow is not None:  # before the alias: the router must never load the challenger unmirrored
                tags[names.TAG_ROLLOUT_SHADOW_SAMPLE] = shadow.sample
            self._persist(deadline, "starting the canary", self.registry.tag_version, self.model, version, tags)
            self._persist(deadline, "naming the challenger", self.registry.set_alias, self.model,
                          names.ALIAS_CHALLENGER, version)
        except _GaveUp as exc:
            raise RegistryUnavailable(
                f"could not start the canary of {self.model} v{version}: MLflow unreachable for "
                f"{self.registry_timeout_s:.0f} s ({exc.cause}); the challenger alias was not set, so champion "
                f"v{champion} still serves all traffic: rerun the step once MLflow is reachable") from None
        self.metrics.weight(self.model, version, weight)

    def _advance(self, version: str, state: RolloutState, decision: Decision) -> Decision:
        """The decision as it happened: ADVANCE once the weight tag is written, else a hold on this step."""
        try:
            self.registry.tag_version(self.model, version, {names.TAG_ROLLOUT_WEIGHT: decision.weight})
        except REGISTRY_ERRORS as exc:
            weight = self.spec.spec.rollout.steps[state.step_index]
            log.warning("%s v%s: MLflow unreachable, weight %s%% not written (%s); holding at %s%%",
                        self.model, version, decision.weight, exc, weight)
            # The check passed: evidence, so no hold timer; the step's data keeps counting from its start.
            held = evolve(state, last_fingerprint=decision.state.last_fingerprint, holding_since_s=None)
            return Decision(Action.HOLD, held, weight, f"passed, but the registry did not take weight "
                                                       f"{decision.weight}% ({exc}): holding at {weight}%")
        return decision

    def _flush(self, version: str) -> None:
        """Write the kept check records now if MLflow answers; otherwise keep them for the next interval."""
        if not self.pending:
            return
        try:
            self.registry.tag_version(self.model, version, dict(self.pending))
        except REGISTRY_ERRORS as exc:
            log.warning("%s v%s: MLflow unreachable, %d check record(s) kept for the next interval (%s)",
                        self.model, version, len(self.pending), exc)
            return
        self.pending.clear()

    def _finish(self, action: Action, version: str, old: str | None, reason: str) -> None:
        """The terminal writes, each retried until `registry_timeout_s` from now; RolloutStuck past it."""
        deadline = self.clock.now() + self.registry_timeout_s
        landed = 0

        def write(fn: Callable[..., Any], *args: Any) -> None:
            nonlocal landed
            self._persist(deadline, f"writing the {action.value} of v{version}", fn, *args)
            landed += 1

        try:
            if self.pending:
                self._persist(deadline, "writing the check records", self.registry.tag_version, self.model,
                              version, dict(self.pending))
                self.pending.clear()
            if action is Action.PROMOTE:
                actions.promote(self.registry, self.model, version, old, reason, write)
            else:
                actions.rollback(self.registry, self.model, version, reason, write)
        except _GaveUp as exc:
            raise RolloutStuck(
                f"could not {action.value} {self.model} v{version}: MLflow unreachable for "
                f"{self.registry_timeout_s:.0f} s ({exc.cause}). "
                + actions.partial_state(action, self.model, version, old, landed)) from None
        if old is None:  # a first version: no check counted this decision
            self.metrics.decision(self.model, version, action.value)
        self.metrics.weight(self.model, version, 100 if action is Action.PROMOTE else 0)

    def _persist(self, deadline: float, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, retried with capped exponential backoff while MLflow fails, until `deadline`."""
        delay = 1.0
        while True:
            try:
                return fn(*args)
            except REGISTRY_ERRORS as exc:
                left = deadline - self.clock.now()
                if left <= 0:
                    raise _GaveUp(exc) from exc
                log.warning("%s: MLflow unreachable while %s (%s); retrying in %.0f s, giving up in %.0f s",
                            self.model, what, exc, min(delay, left), left)
                self.clock.sleep(min(delay, left))
                delay = min(delay * 2, MAX_BACKOFF_S)


def _shadowing(state: RolloutState, result: CheckResult, decision: Decision, left_s: float) -> Decision:
    """Within the shadow stage's duration nothing advances and no hold timer runs: a pass or a hold is a hold
    (failures still count: `decide` kept them in its state)."""
    if decision.action is Action.HOLD and result.verdict is Verdict.FAIL:
        return decision
    seen = evolve(state, last_fingerprint=result.fingerprint or state.last_fingerprint)
    return Decision(Action.HOLD, seen, 0, f"in shadow for {left_s:.0f} s more: " + "; ".join(result.reasons))


def check_record(result: CheckResult, decision: Decision, since: float, at: float) -> dict[str, Any]:
    """What one check saw and decided, as tagged on the model version (`ferry rollout status` shows it).
    `at` and `since` (the start of the step's data) are unix seconds; requests, errors and p99_ms are
    [champion, challenger]; slow and slow_lower are the challenger's requests over the latency limit and the
    lower bound of their share."""
    record: dict[str, Any] = {"verdict": result.verdict.value, "action": decision.action.value,
                              "weight": decision.weight, "reason": decision.reason,
                              "at": round(at, 1), "since": round(since, 1)}
    if result.error is not None:
        record |= {"error_rate_delta": round(result.error.delta, 6), "error_rate_upper": round(result.error.upper, 6),
                   "error_rate_lower": round(result.error.lower, 6), "p_value": round(result.error.p_value, 6)}
    if result.observation is not None:
        champion, challenger = result.observation.champion, result.observation.challenger
        record |= {"requests": [champion.requests, challenger.requests], "errors": [champion.errors, challenger.errors],
                   "p99_ms": [_round(champion.p99_latency_ms), _round(challenger.p99_latency_ms)]}
    if result.slow is not None:
        record |= {"slow": round(result.slow.slow, 1), "slow_lower": round(result.slow.lower, 6)}
    if result.score_psi is not None:
        record |= {"score_psi": round(result.score_psi, 4), "psi_noise": _round(result.psi_noise, 4)}
    if result.shadow_rows is not None:
        record["shadow_rows"] = [result.shadow_rows[0], result.shadow_rows[1]]
    if result.outcomes is not None:
        record["outcomes"] = result.outcomes.record()
    return record


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None or value != value or value == float("inf") else round(value, digits)
