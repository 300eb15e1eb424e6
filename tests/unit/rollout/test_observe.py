"""The observer's PromQL: exact counter differences since the step's start, per variant, no extrapolation."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferry.rollout.observe import observe, since_start


@dataclass
class CannedPrometheus:
    """Answers by metric name; remembers every query."""

    queries: list[str] = field(default_factory=list)

    def vector(self, query: str) -> list[tuple[dict[str, str], float]]:
        self.queries.append(query)
        if "requests_total" in query:
            return [({"version": "1", "outcome": "ok"}, 900.0), ({"version": "2", "outcome": "ok"}, 290.0),
                    ({"version": "2", "outcome": "server_error"}, 10.0), ({"version": "2", "outcome": "client_error"},
                                                                            4.0)]
        if "latency_ms_bucket" in query:
            return [({"version": "1"}, 12.0), ({"version": "2"}, float("nan"))]
        return [({"version": v, "le": le}, n) for v, scale in (("1", 3), ("2", 1))
                for le, n in (("0.5", 80.0 * scale), ("1.0", 95.0 * scale), ("+Inf", 100.0 * scale))]


def test_counts_are_exact_differences_since_the_step_start() -> None:
    assert since_start("x{a=\"b\"}", 1700000000.25) == (
        'clamp_min(x{a="b"} - (x{a="b"} @ 1700000000.250 or x{a="b"} * 0), 0)')
    prom = CannedPrometheus()
    obs = observe(prom, "m", "1", "2", 1700000000.0)  # type: ignore[arg-type]
    assert all("@ 1700000000.000" in q and "increase(" not in q and "rate(" not in q for q in prom.queries)
    assert (obs.champion.requests, obs.champion.errors) == (900.0, 0.0)
    assert (obs.challenger.requests, obs.challenger.errors) == (300.0, 10.0)  # client errors are not served
    assert obs.champion.p99_latency_ms == 12.0 and obs.challenger.p99_latency_ms is None
    assert obs.champion.scores == (240.0, 45.0, 15.0) and obs.challenger.scores == (80.0, 15.0, 5.0)
    assert obs.score_psi == 0.0  # same shape, different totals


@dataclass
class LowBucketsMissing(CannedPrometheus):
    """The router creates a score bucket's series with its first row: version 2 never scored <= 0.5."""

    def vector(self, query: str) -> list[tuple[dict[str, str], float]]:
        if "score_bucket_total" not in query:
            return super().vector(query)
        self.queries.append(query)
        return [({"version": "1", "le": "0.5"}, 50.0), ({"version": "1", "le": "1.0"}, 90.0),
                ({"version": "1", "le": "+Inf"}, 100.0),
                ({"version": "2", "le": "1.0"}, 60.0), ({"version": "2", "le": "+Inf"}, 100.0)]


def test_a_missing_low_bucket_counts_as_zero_so_both_variants_share_bins() -> None:
    obs = observe(LowBucketsMissing(), "m", "1", "2", 1700000000.0)  # type: ignore[arg-type]
    assert obs.champion.scores == (50.0, 40.0, 10.0)
    assert obs.challenger.scores == (0.0, 60.0, 40.0)
