"""Benchmark: how fast the canary rolls back a worse challenger, and how often it wrongly rolls back a good one.

Not a test: it prints figures and writes docs/benchmarks/canary.md. Everything is real and on loopback:
a Ray head, an MLflow server and Prometheus on free ports in a temporary home, the router deployed with
`deploy_local(..., allow_fault_injection=True)`, synthetic traffic at 50 requests/s over random customers,
and `ferry.rollout.controller.Controller` with the real `prometheus_observer` (what `ferry step rollout`
runs). The helpers are the canary integration test's (tests/integration/test_canary.py).

(i)  time to rollback: a challenger whose `ferry.fault.error_rate` is 0.05 (5 points above the champion's
     0) is handed to the controller; timed from the controller's start (it tags the weight and sets the
     `challenger` alias: the moment users can reach it) to the rollback written to the registry, and to
     the last answer a client got from it (the router's next registry poll takes it out of traffic).
     Target < 60 s; Flagger's documented defaults (checks every 60 s, rollback after `threshold: 5`
     failed checks) cannot act before 5 minutes.
     A worse challenger that gets promoted anyway is counted as such, then has its fault tag cleared and
     its errors are let out of the window, so later rollouts compare against a clean champion.
(ii) false rollbacks: healthy challengers (the champion's network registered again: same scores, same
     speed, no faults) rolled out back to back under continuous traffic: each starts right after the
     previous one promoted, so its champion is seconds old as champion. Target 0 rollbacks.
     Up to --healthy rollouts (default 20), fewer if --budget-s runs out first; the report says which.

Bounded: every rollout ends by itself (failure_limit, hold_timeout, or the steps run out), the traffic
generator stops after its own time and request caps, and the script stops starting rollouts at the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from tests.integration.test_canary import (  # noqa: E402
    BAD_ERROR_RATE,
    POLL_S,
    RATE,
    ROLLOUT,
    Lab,
    Load,
    Run,
    canary_spec,
    describe,
    lab_settings,
    start_lab,
)
from tests.support.local_stack import stop_stack  # noqa: E402

from ferry.contract.names import TAG_FAULT_ERROR_RATE  # noqa: E402
from ferry.rollout.controller import SETTLE_S  # noqa: E402
from ferry.rollout.policy import Action  # noqa: E402

EXPORT_LAG_S = 25.0  # Ray's 10 s export + Prometheus' 10 s scrape, with room
FLAGGER_FLOOR_S = 60 * 5  # analysis.interval 1m × threshold 5, as in Flagger's documented examples


@dataclass
class Timed:
    kind: str
    version: str
    run: Run
    users_500: int = 0
    last_answer_s: float | None = None
    non_200: int = 0

    @property
    def action(self) -> str:
        return str(self.run.outcome.action)

    def first_conclusive_s(self) -> float | None:
        """Seconds from the start to the first check that passed or failed (not held)."""
        for check in self.run.checks():
            if check["verdict"] in ("pass", "fail"):
                return float(check["at"]) - self.run.started_unix
        return None

    def worst(self, what: str) -> float:
        """The challenger's worst p99 (ms) or score PSI over the recorded checks."""
        values = [c["p99_ms"][1] if what == "p99" else c.get("score_psi") for c in self.run.checks() if "p99_ms" in c]
        return max((v for v in values if v is not None), default=float("nan"))

    def stale_looks(self) -> int:
        """Looks at Prometheus that found the previous check's data (not counted as checks)."""
        fresh = sum(1 for c in self.run.checks() if "requests" in c and c["verdict"] != "stale")
        return len(self.run.observations) - fresh


def bad_rollout(lab: Lab, load: Load) -> Timed:
    version = lab.register(error_rate=BAD_ERROR_RATE)
    assert lab.champion_visible(ROLLOUT["analysis"]["min_requests"]), "no champion metrics in Prometheus"
    started = time.monotonic()
    run = lab.rollout(version)
    time.sleep(3 * POLL_S)  # let the router's next polls drop the challenger before counting what users saw
    errors = [t for t, status, v, _ in list(load.results) if t >= started and status == 500 and v == version]
    last = load.last_answer_by(version)
    timed = Timed("5-point worse", version, run, users_500=len(errors),
                  last_answer_s=None if last is None or run.outcome.action is Action.PROMOTE else last - started,
                  non_200=sum(n for s, n in load.statuses(started).items() if s != 200))
    if run.outcome.action is Action.PROMOTE:  # a worse champion would skew every later comparison: heal it,
        lab.registry.tag_version(lab.name, version, {TAG_FAULT_ERROR_RATE: 0})
        time.sleep(EXPORT_LAG_S)  # and let its errors reach Prometheus before the next step starts counting
    return timed


def healthy_rollout(lab: Lab, load: Load) -> Timed:
    version = lab.register()
    started = time.monotonic()
    run = lab.rollout(version)
    return Timed("healthy", version, run, non_200=sum(n for s, n in load.statuses(started).items() if s != 200))


def row(index: int, timed: Timed) -> str:
    first = timed.first_conclusive_s()
    last = "" if timed.last_answer_s is None else f"{timed.last_answer_s:.1f}"
    reason = timed.run.outcome.reason.replace("|", "/")
    users = (timed.users_500, "") if timed.kind != "healthy" else ("", timed.non_200)
    return (f"| {index} | {timed.kind} | {timed.version} | {timed.action} | {timed.run.seconds:.1f} | "
            f"{'' if first is None else f'{first:.1f}'} | {timed.run.outcome.checks} | {timed.stale_looks()} | "
            f"{last} | "
            f"{users[0]} | {users[1]} | {timed.worst('p99'):.0f} | {timed.worst('psi'):.3f} | {reason} |")


def report(bad: list[Timed], healthy: list[Timed], wanted_healthy: int, budget_s: float, wall_s: float) -> str:
    analysis = ROLLOUT["analysis"]
    rollbacks = [t for t in bad if t.run.outcome.action is Action.ROLLBACK]
    promoted_bad = [t for t in bad if t.run.outcome.action is Action.PROMOTE]
    false_rollbacks = [t for t in healthy if t.run.outcome.action is not Action.PROMOTE]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = ["# canary benchmark: time to rollback, false rollbacks", "",
             "Written by `benchmarks/bench_canary.py` (`.venv/bin/python benchmarks/bench_canary.py --bad 5 "
             f"--healthy {wanted_healthy} --budget-s {budget_s:.0f}`).", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; Ray head "
             "(1 CPU offered), MLflow, Prometheus, the router replica, the traffic generator and the controller "
             f"share it. Load average at the end: {load}. Wall time of the whole run: {wall_s / 60:.1f} min.", "",
             "## Settings", "",
             f"- Rollout: steps {ROLLOUT['steps']}, interval {ROLLOUT['interval']}, hold_timeout "
             f"{ROLLOUT['hold_timeout']}; analysis min_requests {analysis['min_requests']}, failure_limit "
             f"{analysis['failure_limit']}, max_p99_latency_ms {analysis['max_p99_latency_ms']}, and the spec "
             "defaults max_error_rate_delta 0.01, significance 0.05, max_score_psi 0.2.",
             "- What a check sees: exact counter differences since the step began (`x - (x @ start or x * 0)`, no "
             "extrapolation); the first step counts from the challenger's start, later ones from "
             f"{SETTLE_S:.0f} s after the weight change (one Ray export interval, so no sample mixes two weights). "
             "A look whose counts equal the previous check's is stale: not a check.",
             "- Decisions: fail when the error-rate difference's lower confidence bound is above +0.01, pass only "
             "when its upper bound is below +0.01 (and p99 and PSI are within limits), otherwise hold; a p99 over "
             "the limit fails only when the share of requests slower than it has a lower bound above 1 %, and "
             "holds otherwise; PSI is judged only when both sides have enough scored rows that chance alone "
             "stays under 0.2.",
             "- Metrics path: Ray exports replica metrics every 10 s (its default `metrics_report_interval_ms`), "
             "Prometheus scrapes every 10 s (ferry's local default; unchanged).",
             f"- Traffic: {RATE:.0f} requests/s, one row each, random customer ids (sticky split), 6 paced client "
             f"threads; the router polls the registry every {POLL_S:.0f} s.",
             f"- Worse challenger: `ferry.fault.error_rate` {BAD_ERROR_RATE} (champion 0): 5 % of its requests "
             "answer 500. Healthy challenger: the champion's network registered as a new version, no faults.", "",
             "## (i) Time from deploying a 5-point worse challenger to its rollback", ""]
    if rollbacks:
        secs = [t.run.seconds for t in rollbacks]
        lines += [f"Rolled back {len(rollbacks)} of {len(bad)}; promoted {len(promoted_bad)}. Time to rollback: "
                  f"median **{statistics.median(secs):.1f} s**, max {max(secs):.1f} s (target < 60 s). "
                  f"× Flagger floor ({FLAGGER_FLOOR_S} s, computed from its defaults, not measured): "
                  f"{statistics.median(secs) / FLAGGER_FLOOR_S:.2f}.", ""]
    else:
        lines += [f"No rollback in {len(bad)} tries (promoted {len(promoted_bad)}).", ""]
    lines += [f"## (ii) Healthy challengers wrongly rolled back: {len(false_rollbacks)} of {len(healthy)}", "",
              f"{len(healthy)} of the {wanted_healthy} rollouts asked for ran"
              + ("" if len(healthy) >= wanted_healthy else f" (the {budget_s / 60:.0f}-minute budget ran out)")
              + ". Target 0. Durations: "
              + (f"median {statistics.median([t.run.seconds for t in healthy]):.1f} s, min "
                 f"{min(t.run.seconds for t in healthy):.1f} s, max {max(t.run.seconds for t in healthy):.1f} s."
                 if healthy else "none."), "",
              "## Every rollout", "",
              "Seconds from the controller's start. *conclusive*: first check that passed or failed; *checks*: "
              "recorded checks; *stale*: looks at Prometheus that found no new data (not counted); "
              "*last answer*: when the challenger last answered a client (a prediction or an injected 500): "
              "the router has taken it out of traffic by then; *500s*: injected errors users got from the challenger, "
              "from its start until 3 s after the decision; "
              "*non-200*: failed requests during a healthy rollout; p99 and PSI: the worst challenger values "
              "the controller recorded.", "",
              "| # | challenger | version | outcome | seconds | conclusive | checks | stale | last answer | 500s | "
              "non-200 | p99 ms | PSI | reason |",
              "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines += [row(i + 1, t) for i, t in enumerate([*bad, *healthy])]
    lines += ["", *observations([*bad, *healthy], healthy), *verdicts(promoted_bad, false_rollbacks),
              "", "## Every check", "",
              "What the controller recorded at each check (the `ferry.rollout.check.NNN` tags) and decided.", "",
              "```"]
    for i, timed in enumerate([*bad, *healthy]):
        lines += [f"#{i + 1} {timed.kind} version {timed.version}: {describe(timed.run)}"]
    lines += ["```", ""]
    return "\n".join(lines)


def observations(runs: list[Timed], healthy: list[Timed]) -> list[str]:
    """What the per-check data says, computed from this run."""
    checks = [c for timed in healthy for c in timed.run.checks()]
    psis = [c["score_psi"] for c in checks if c.get("score_psi") is not None]
    psi_held = sum("too few scored rows to judge PSI" in c["reason"] for c in checks)
    stale = sum(t.stale_looks() for t in runs)
    looks = sum(len(t.run.observations) for t in runs)
    lines = ["## Observations", ""]
    for kind, why in (("5-point worse", f"the challenger's first {ROLLOUT['analysis']['min_requests']} requests "
                       "(min_requests) and enough errors for the lower bound to clear the margin"),
                      ("healthy", "about 300 error-free challenger requests before the upper bound drops under "
                       "the 1-point margin (3/n)")):
        first = [t for t in (timed.first_conclusive_s() for timed in runs if timed.kind == kind) if t is not None]
        if first:
            lines.append(f"- First conclusive check, {kind}: median {statistics.median(first):.1f} s after the "
                         f"start (min {min(first):.1f}, max {max(first):.1f}): {why}, at the first step's weight "
                         "(20 % of 50 requests/s), plus up to 10 s of Ray export and 10 s of scrape.")
    lines.append(f"- {stale} of {looks} looks at Prometheus found the previous check's data (5 s interval under a "
                 "10 s export and scrape) and were not counted, so two failed checks are always two scrapes.")
    if psis:
        over = sum(p > 0.2 for p in psis)
        lines.append(f"- Score PSI between two identical networks, at the healthy challengers' recorded checks: "
                     f"median {statistics.median(psis):.3f}, max {max(psis):.3f}; {over} of {len(psis)} over the "
                     f"0.2 limit; {psi_held} checks held because too few rows were scored to judge PSI.")
    return lines


def verdicts(promoted_bad: list[Timed], false_rollbacks: list[Timed]) -> list[str]:
    """Why a worse challenger got through, or a healthy one was rolled back, from the checks of this run."""
    lines = []
    for t in promoted_bad:
        last = t.run.checks()[-1] if t.run.checks() else {}
        lines.append(f"- Worse version {t.version} promoted ({t.run.outcome.reason}); its last check: "
                     f"{json.dumps(last, sort_keys=True)}; clients got {t.users_500} injected 500s from it.")
    for t in false_rollbacks:
        last = t.run.checks()[-1] if t.run.checks() else {}
        lines.append(f"- Healthy version {t.version} rolled back ({t.run.outcome.reason}); its last check: "
                     f"{json.dumps(last, sort_keys=True)}.")
    return lines


def status_examples(lab: Lab, runs: list[Timed]) -> list[str]:
    """`ferry rollout status` as on-call would run it, for the first worse and the last healthy rollout."""
    picks = [t for t in runs if t.kind != "healthy"][:1] + [t for t in runs if t.kind == "healthy"][-1:]
    env = {**os.environ, "MLFLOW_TRACKING_URI": lab.settings.mlflow_uri, "COLUMNS": "250", "NO_COLOR": "1"}
    lines = ["## `ferry rollout status` after the run", ""]
    for timed in picks:
        command = ["ferry", "rollout", "status", lab.name, "--version", timed.version]
        done = subprocess.run([sys.executable, "-m", "ferry.cli.app", *command[1:]], env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        lines += [f"{timed.kind} version {timed.version}:", "", "```", f"$ {' '.join(command)}",
                  (done.stdout + done.stderr).rstrip(), "```", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bad", type=int, default=5, help="worse challengers to time (i)")
    parser.add_argument("--healthy", type=int, default=20, help="healthy rollouts to run (ii)")
    parser.add_argument("--budget-s", type=float, default=1800.0, help="stop starting healthy rollouts after this")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/canary.md")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ferry-bench-canary-"))
    settings = lab_settings(home)
    began = time.monotonic()
    bad: list[Timed] = []
    healthy: list[Timed] = []
    try:
        lab = start_lab(settings, canary_spec())  # the spec's own max_score_psi (0.2), unlike the test
        # One bounded traffic stream for the whole run (caps: time and request count).
        cap_s = 120.0 * args.bad + args.budget_s + 120.0
        examples: list[str] = []
        with Load(lab.url, max_s=cap_s, max_requests=int(RATE * cap_s) + 1000, seed=7) as load:
            for _ in range(args.bad):
                bad.append(bad_rollout(lab, load))
                print(describe(bad[-1].run), flush=True)
            healthy_began = time.monotonic()
            for _ in range(args.healthy):
                if time.monotonic() - healthy_began > args.budget_s:
                    break
                healthy.append(healthy_rollout(lab, load))
                print(f"healthy {len(healthy)}: " + describe(healthy[-1].run), flush=True)
        examples = status_examples(lab, [*bad, *healthy])
    finally:
        stop_stack(settings)
        shutil.rmtree(home, ignore_errors=True)
    text = report(bad, healthy, args.healthy, args.budget_s, time.monotonic() - began) + "\n".join(examples) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
