"""Every check and decision as Prometheus metrics (scraped from the rollout step while it runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from ferry.contract import metrics as m

if TYPE_CHECKING:
    from ferry.rollout.policy import CheckResult, Decision


class RolloutMetrics:
    """The catalogue's rollout section (`ferry.contract.metrics.ROLLOUT`), in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.checks = self._counter(m.ROLLOUT_CHECKS)
        self.decisions = self._counter(m.ROLLOUT_DECISIONS)
        self.weights = self._gauge(m.ROLLOUT_WEIGHT)
        self.deltas = self._gauge(m.ROLLOUT_ERROR_RATE_DELTA)
        self.p_values = self._gauge(m.ROLLOUT_ERROR_P_VALUE)
        self.uppers = self._gauge(m.ROLLOUT_ERROR_RATE_UPPER_BOUND)
        self.psis = self._gauge(m.ROLLOUT_SCORE_PSI)
        self.outcome_deltas = self._gauge(m.ROLLOUT_OUTCOME_DELTA)
        self.outcome_lowers = self._gauge(m.ROLLOUT_OUTCOME_LOWER_BOUND)
        self.labelled = self._gauge(m.ROLLOUT_LABELLED)

    def _counter(self, metric: m.Metric) -> Counter:
        return Counter(metric.name, metric.help, metric.label_names, registry=self.registry)

    def _gauge(self, metric: m.Metric) -> Gauge:
        return Gauge(metric.name, metric.help, metric.label_names, registry=self.registry)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def check(self, model: str, version: str, result: CheckResult, decision: Decision) -> None:
        self.checks.labels(model, version, result.verdict.value).inc()
        self.decision(model, version, decision.action.value)
        self.weight(model, version, decision.weight)
        if result.error is not None:  # a stale or data-less check leaves the last values in place
            self.deltas.labels(model, version).set(result.error.delta)
            self.p_values.labels(model, version).set(result.error.p_value)
            self.uppers.labels(model, version).set(result.error.upper)
        if result.score_psi is not None:
            self.psis.labels(model, version).set(result.score_psi)
        if result.outcomes is not None:
            self.labelled.labels(model, version).set(result.outcomes.labelled)
            for metric, (delta, lower, _) in result.outcomes.bounds().items():
                self.outcome_deltas.labels(model, version, metric).set(delta)
                self.outcome_lowers.labels(model, version, metric).set(lower)

    def decision(self, model: str, version: str, action: str) -> None:
        self.decisions.labels(model, version, action).inc()

    def weight(self, model: str, version: str, weight: float) -> None:
        self.weights.labels(model, version).set(weight)
