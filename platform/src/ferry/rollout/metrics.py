"""Every check and decision as Prometheus metrics (scraped from the rollout step while it runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

if TYPE_CHECKING:
    from ferry.rollout.policy import CheckResult, Decision


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["model", "version"]
        self.checks = Counter("ferry_rollout_checks_total", "Canary checks by verdict.", [*labels, "verdict"],
                              registry=self.registry)
        self.decisions = Counter("ferry_rollout_decisions_total", "Canary decisions by action.",
                                 [*labels, "action"], registry=self.registry)
        self.weights = Gauge("ferry_rollout_weight", "Challenger traffic weight (0-100).", labels,
                             registry=self.registry)
        self.deltas = Gauge("ferry_rollout_error_rate_delta", "Challenger minus champion error rate.", labels,
                            registry=self.registry)
        self.p_values = Gauge("ferry_rollout_error_p_value", "p-value of the error-rate test.", labels,
                              registry=self.registry)
        self.uppers = Gauge("ferry_rollout_error_rate_upper_bound",
                            "Upper confidence bound of challenger minus champion error rate (promotion needs it "
                            "under max_error_rate_delta).", labels, registry=self.registry)
        self.psis = Gauge("ferry_rollout_score_psi", "PSI between the variants' score histograms in this step.",
                          labels, registry=self.registry)

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

    def decision(self, model: str, version: str, action: str) -> None:
        self.decisions.labels(model, version, action).inc()

    def weight(self, model: str, version: str, weight: float) -> None:
        self.weights.labels(model, version).set(weight)
