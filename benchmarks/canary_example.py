"""The worked examples of docs/how-to/read-a-canary-decision.md, from real rollouts of the controller.

`ferry.rollout.controller.Controller` runs two rollouts exactly as `ferry step rollout` does, against an
in-memory registry and a simulated clock, reading metrics from a simulated Prometheus: 50 requests/s split
by the weight, one scrape every 10 s after a 10 s Ray export (so some looks find no new scrape), and a
challenger that fails 5 % of its requests, then one that fails none. `ferry rollout status` prints each
rolled-out version as an operator would see it; those outputs are the doc's section. Deterministic: the same
code prints the same page, and tests/golden/test_generated_docs.py fails when the doc no longer matches.

    .venv/bin/python benchmarks/canary_example.py            # rewrite the doc's section
    .venv/bin/python benchmarks/canary_example.py --print    # only print it
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "fraud-detector-lite"
EPOCH = 1_795_000_000.0  # the simulated clock's start (2026-11-18 UTC)
RATE = 50.0
SCRAPE_S = 10.0
EXPORT_S = 10.0
SHAPE = (40, 20, 12, 8, 6, 4, 3, 2, 2, 1, 1, 1)  # rows per score bin, the same model on both sides
ROLLOUT = {"steps": [20, 50, 100], "interval": "5s", "hold_timeout": "2m",
           "analysis": {"min_requests": 100, "failure_limit": 2, "max_p99_latency_ms": 100}}
COLUMNS = "250"


@dataclass
class Clock:
    t: float = EPOCH

    def now(self) -> float:
        return self.t - EPOCH

    def time(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Prometheus:
    """What Prometheus would hold for both variants since `since`: each second's traffic is split by the
    weight then in force, exported by Ray every EXPORT_S and scraped every SCRAPE_S."""

    clock: Clock
    challenger_error_rate: float
    weights: list[tuple[float, float]] = field(default_factory=list)  # (from time, challenger share)

    def weight_at(self, t: float) -> float:
        return next((w for start, w in reversed(self.weights) if start <= t), 0.0)

    def __call__(self, champion: str, challenger: str, since: float):  # type: ignore[no-untyped-def]
        from ferry.rollout.policy import Observation, VariantStats

        scraped = (self.clock.t - EXPORT_S) // SCRAPE_S * SCRAPE_S  # the newest data Prometheus has
        seconds = [since + s for s in range(max(0, int(scraped - since)))]
        share = sum(self.weight_at(t) for t in seconds)
        n_chal = round(RATE * share)  # counters count whole requests
        n_champ = round(RATE * len(seconds)) - n_chal

        def stats(n: float, errors: float, p99: float) -> VariantStats:
            return VariantStats(n, errors, p99 if n else None, tuple(n * s / sum(SHAPE) for s in SHAPE))

        return Observation(stats(n_champ, 0, 7.5), stats(n_chal, round(n_chal * self.challenger_error_rate), 7.8))


def spec():  # type: ignore[no-untyped-def]
    from ferry.spec import load_specs
    from ferry.spec.models import RolloutSpec

    model = load_specs([ROOT / "gitops/models" / f"{MODEL}.yaml"])[0][0].model
    body = model.spec.model_copy(update={"rollout": RolloutSpec.model_validate(ROLLOUT)})
    return model.model_copy(update={"spec": body})


def rollout(error_rate: float) -> str:
    """One rollout of version 2 against champion 1; what `ferry rollout status` prints afterwards."""
    from prometheus_client import CollectorRegistry
    from typer.testing import CliRunner

    from ferry.adapters.registry_memory import MemoryRegistry
    from ferry.cli import rollout as cli
    from ferry.contract import names
    from ferry.rollout.controller import Controller
    from ferry.rollout.metrics import RolloutMetrics

    clock = Clock()
    registry = MemoryRegistry(now=clock.now)
    registry.ensure_registered_model(MODEL, "risk")
    for _ in range(2):
        registry.register_version(MODEL, "models:/m/1", tags={})
    registry.set_alias(MODEL, names.ALIAS_CHAMPION, "1")
    prometheus = Prometheus(clock, error_rate)
    tag_version = registry.tag_version

    def tagging(model: str, version: str, tags: dict) -> None:  # type: ignore[type-arg]
        if names.TAG_ROLLOUT_WEIGHT in tags:  # the router follows the weight tag at once (1 s poll)
            prometheus.weights.append((clock.t, float(tags[names.TAG_ROLLOUT_WEIGHT]) / 100))
        tag_version(model, version, tags)

    registry.tag_version = tagging  # type: ignore[method-assign]
    Controller(registry, spec(), prometheus, clock, RolloutMetrics(CollectorRegistry())).run("2")
    previous = cli._registry
    cli._registry = lambda: registry  # type: ignore[assignment]
    try:
        result = CliRunner().invoke(cli.rollout_app, ["status", MODEL, "--version", "2"], env={"COLUMNS": COLUMNS})
    finally:
        cli._registry = previous  # type: ignore[assignment]
    if result.exit_code:
        raise SystemExit(f"ferry rollout status failed: {result.output}")
    return f"$ ferry rollout status {MODEL} --version 2\n{result.output.rstrip()}"


def section() -> str:
    failing, healthy = rollout(0.05), rollout(0.0)
    return "\n".join([
        f"Written by `benchmarks/canary_example.py`: two rollouts of `{MODEL}` (steps 20/50/100, checks every "
        f"5 s, `min_requests` 100, `failure_limit` 2) by the rollout controller, on a simulated clock, against "
        f"{RATE:g} requests/s as Prometheus would count them (a {EXPORT_S:g} s Ray export, a scrape every "
        f"{SCRAPE_S:g} s). First a challenger that fails 5 % of its requests against a champion that fails none:",
        "", "```", failing, "```", "",
        "Then a healthy challenger (no errors, the same scores and latency as the champion):",
        "", "```", healthy, "```",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="only print the section")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    body = section()
    if args.print:
        print(body)
        return
    from tests.support.generated_docs import entry_for, write_section

    write_section(entry_for("docs/how-to/read-a-canary-decision.md"), body)


if __name__ == "__main__":
    main()
