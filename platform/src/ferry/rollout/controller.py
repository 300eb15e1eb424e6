"""The canary controller: the only writer of rollout state (aliases and the challenger's weight tag).

It walks the spec's weight steps; at each interval it observes both variants in Prometheus on the
traffic since the current step began, asks the pure policy for a decision, records the check on the
model version (tags) and in Prometheus metrics, and moves the weight (the terminal writes live in
ferry.rollout.actions). A check that finds the same data as the previous one (the metrics path, Ray's
10 s export plus the scrape, is slower than a short interval) is stale: counted in the metrics, never a
second pass or failure, and not tagged unless it ends the rollout.
Registry writes retry with backoff; if MLflow stays down the controller keeps its state and retries
at the next interval (serving keeps the last known aliases meanwhile).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ferry.adapters.prometheus import Prometheus, PrometheusUnavailable
from ferry.adapters.registry import Registry
from ferry.render import names
from ferry.rollout import actions
from ferry.rollout.metrics import RolloutMetrics
from ferry.rollout.observe import observe
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
    staleness,
)
from ferry.spec.models import ModelSpec

Observe = Callable[[str, str, float], Observation]  # (champion, challenger, since unix time)
TERMINAL = (Action.PROMOTE, Action.ROLLBACK)
# After a weight change the first samples can still carry up to one Ray export interval (10 s by default)
# of traffic served at the previous weight: later steps start counting that much after the change. The
# first step needs none: the challenger served nothing before it.
SETTLE_S = 10.0


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


def prometheus_observer(prom: Prometheus, model: str) -> Observe:
    def run(champion: str, challenger: str, since_unix: float) -> Observation:
        return observe(prom, model, champion, challenger, since_unix)

    return run


class Controller:
    def __init__(self, registry: Registry, spec: ModelSpec, observer: Observe, clock: Clock | None = None,
                 metrics: RolloutMetrics | None = None, settle_s: float = SETTLE_S) -> None:
        self.registry, self.spec, self.observer = registry, spec, observer
        self.clock = clock or RealClock()
        self.settle_s = settle_s
        self.metrics = metrics or RolloutMetrics()
        self.model = spec.metadata.name

    def run(self, version: str) -> RolloutOutcome:
        champion = self.registry.alias(self.model, names.ALIAS_CHAMPION)
        if champion is None or champion.version == version:
            self._promote(version, None, "first version: nothing to compare against")
            return RolloutOutcome(Action.PROMOTE, version, "first version", 0)
        return self._walk(version, str(champion.version))

    def _walk(self, version: str, champion: str) -> RolloutOutcome:
        rollout = self.spec.spec.rollout
        state = RolloutState()
        self._start(version, rollout.steps[0])
        since = self.clock.time()  # the first step counts from the moment the challenger can be reached
        interval = parse_duration_s(rollout.interval)
        checks = 0
        while True:
            self.clock.sleep(interval)
            result = staleness(self._check(champion, version, since), state)
            decision = decide(rollout, state, result, self.clock.now())
            if result.verdict is not Verdict.STALE or decision.action is not Action.HOLD:
                checks += 1
                self._record(version, checks, result, decision, since)
            self.metrics.check(self.model, version, result, decision)
            state = decision.state
            if decision.action is Action.PROMOTE:
                self._promote(version, champion, decision.reason)
            elif decision.action is Action.ROLLBACK:
                self._rollback(version, decision.reason)
            elif decision.action is Action.ADVANCE:
                self._retrying(self.registry.tag_version, self.model, version,
                               {names.TAG_ROLLOUT_WEIGHT: decision.weight})
                since = self.clock.time() + self.settle_s
            if decision.action in TERMINAL:
                return RolloutOutcome(decision.action, version, decision.reason, checks)

    def _check(self, champion: str, version: str, since: float) -> CheckResult:
        if self.clock.time() < since:
            return CheckResult(Verdict.INCONCLUSIVE, ("the new weight's metrics are not in yet",))
        try:
            return check(self.spec.spec.rollout.analysis, self.observer(champion, version, since))
        except PrometheusUnavailable as exc:
            return CheckResult(Verdict.INCONCLUSIVE, (f"no metrics: {exc}",))

    def _start(self, version: str, weight: int) -> None:
        self._retrying(self.registry.tag_version, self.model, version,
                       {names.TAG_ROLLOUT_STATE: "canary", names.TAG_ROLLOUT_WEIGHT: weight})
        self._retrying(self.registry.set_alias, self.model, names.ALIAS_CHALLENGER, version)
        self.metrics.weight(self.model, version, weight)

    def _promote(self, version: str, old: str | None, reason: str) -> None:
        actions.promote(self.registry, self.model, version, old, reason, self._retrying)
        self.metrics.decision(self.model, version, Action.PROMOTE.value)
        self.metrics.weight(self.model, version, 100)

    def _rollback(self, version: str, reason: str) -> None:
        actions.rollback(self.registry, self.model, version, reason, self._retrying)
        self.metrics.weight(self.model, version, 0)

    def _record(self, version: str, number: int, result: CheckResult, decision: Decision, since: float) -> None:
        record = check_record(result, decision, since, self.clock.time())
        self._retrying(self.registry.tag_version, self.model, version,
                       {f"{actions.CHECK_TAG_PREFIX}{number:03d}": json.dumps(record, sort_keys=True)})

    def _retrying(self, fn: Callable[..., Any], *args: Any, attempts: int = 6) -> Any:
        """Registry writes survive a short MLflow outage; a long one fails loudly rather than half-moving."""
        delay = 1.0
        for attempt in range(attempts):
            try:
                return fn(*args)
            except Exception:
                if attempt == attempts - 1:
                    raise
                self.clock.sleep(delay)
                delay = min(delay * 2, 30.0)
        return None


def check_record(result: CheckResult, decision: Decision, since: float, at: float) -> dict[str, Any]:
    """What one check saw and decided, as tagged on the model version (`ferry rollout status` shows it).
    `at` and `since` (the start of the step's data) are unix seconds; requests, errors and p99_ms are
    [champion, challenger]."""
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
    if result.score_psi is not None:
        record |= {"score_psi": round(result.score_psi, 4), "psi_noise": _round(result.psi_noise, 4)}
    return record


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None or value != value or value == float("inf") else round(value, digits)
