"""The canary controller: the only writer of rollout state (aliases and the challenger's weight tag).

It walks the spec's weight steps; at each interval it observes both variants in Prometheus, asks the
pure policy for a decision, records the check on the model version (tags) and in Prometheus metrics,
and moves the weight. Promotion sets `champion` before removing `challenger`, so at every instant the
router sees a consistent pair; a rollback removes the challenger alias and sets its weight to 0.
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
)
from ferry.spec.models import ModelSpec

Observe = Callable[[str, str], Observation]
TERMINAL = (Action.PROMOTE, Action.ROLLBACK)
MIN_WINDOW_S = 30  # rate windows need a few scrapes, whatever the rollout interval


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class RolloutOutcome:
    action: Action
    version: str
    reason: str
    checks: int


def prometheus_observer(prom: Prometheus, model: str, window_s: float) -> Observe:
    window = f"{int(max(window_s, MIN_WINDOW_S))}s"

    def run(champion: str, challenger: str) -> Observation:
        return observe(prom, model, champion, challenger, window)

    return run


class Controller:
    def __init__(self, registry: Registry, spec: ModelSpec, observer: Observe, clock: Clock | None = None,
                 metrics: RolloutMetrics | None = None) -> None:
        self.registry, self.spec, self.observer = registry, spec, observer
        self.clock = clock or RealClock()
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
        interval = parse_duration_s(rollout.interval)
        checks = 0
        while True:
            self.clock.sleep(interval)
            checks += 1
            result = self._check(champion, version)
            decision = decide(rollout, state, result, self.clock.now())
            self._record(version, checks, result, decision)
            state = decision.state
            if decision.action is Action.PROMOTE:
                self._promote(version, champion, decision.reason)
            elif decision.action is Action.ROLLBACK:
                self._rollback(version, decision.reason)
            elif decision.action is Action.ADVANCE:
                self._retrying(self.registry.tag_version, self.model, version,
                               {names.TAG_ROLLOUT_WEIGHT: decision.weight})
            if decision.action in TERMINAL:
                return RolloutOutcome(decision.action, version, decision.reason, checks)

    def _check(self, champion: str, version: str) -> CheckResult:
        try:
            return check(self.spec.spec.rollout.analysis, self.observer(champion, version))
        except PrometheusUnavailable as exc:
            return CheckResult(Verdict.INCONCLUSIVE, (f"no metrics: {exc}",))

    def _start(self, version: str, weight: int) -> None:
        self._retrying(self.registry.tag_version, self.model, version,
                       {names.TAG_ROLLOUT_STATE: "canary", names.TAG_ROLLOUT_WEIGHT: weight})
        self._retrying(self.registry.set_alias, self.model, names.ALIAS_CHALLENGER, version)
        self.metrics.weight(self.model, version, weight)

    def _promote(self, version: str, old: str | None, reason: str) -> None:
        self._retrying(self.registry.set_alias, self.model, names.ALIAS_CHAMPION, version)
        self._retrying(self.registry.delete_alias, self.model, names.ALIAS_CHALLENGER)
        self._retrying(self.registry.tag_version, self.model, version, {
            names.TAG_ROLLOUT_STATE: "promoted", names.TAG_ROLLOUT_WEIGHT: 100, names.TAG_ROLLOUT_REASON: reason})
        if old is not None:
            self._retrying(self.registry.tag_version, self.model, old, {names.TAG_ROLLOUT_STATE: "retired"})
        self.metrics.decision(self.model, version, Action.PROMOTE.value)
        self.metrics.weight(self.model, version, 100)

    def _rollback(self, version: str, reason: str) -> None:
        self._retrying(self.registry.tag_version, self.model, version, {names.TAG_ROLLOUT_WEIGHT: 0})
        self._retrying(self.registry.delete_alias, self.model, names.ALIAS_CHALLENGER)
        self._retrying(self.registry.tag_version, self.model, version,
                       {names.TAG_ROLLOUT_STATE: "rolled-back", names.TAG_ROLLOUT_REASON: reason})
        self.metrics.weight(self.model, version, 0)

    def _record(self, version: str, number: int, result: CheckResult, decision: Decision) -> None:
        record = {"verdict": result.verdict.value, "action": decision.action.value, "weight": decision.weight,
                  "reason": decision.reason, "error_rate_delta": round(result.error_rate_delta, 6),
                  "p_value": round(result.p_value, 6)}
        self._retrying(self.registry.tag_version, self.model, version,
                       {f"ferry.rollout.check.{number:03d}": json.dumps(record, sort_keys=True)})
        self.metrics.check(self.model, version, result, decision)

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
