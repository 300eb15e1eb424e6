"""Benchmark: #15's closed loop at replay speed, and the models it made, on drifted weeks no model trained on.

Not a test: it prints figures and writes a section of docs/benchmarks/closed-loop.md and the real output quoted
by docs/how-to/walk-the-closed-loop.md. It runs what tests/integration/test_closed_loop_e2e.py runs (the same
functions: every local service on loopback ports in a throwaway home, the `loop` spec, five normal weeks, then
amounts twice as large), so the loop it measures is the one CI checks:

1. bootstrap: five normal weeks served and labelled, then `ferry up` trains v1 on the log window;
2. drift: four drifted weeks at once, then a steady stream at 150 payments/s (~13 s an event day); the drift
   alert starts a retraining run on the newest labelled window, whose version is shadowed, judged on labels
   and promoted;
3. a worse challenger: the spec's data put back on the static simulator (normal amounts), rolled back in shadow.

Then the registered models are scored offline on the held-out drifted weeks (HELD_OUT: the world's last two
weeks, after every training window; features computed by the workload's offline `add_features`, which #14's
parity benchmark shows equal to what the router computes): average precision and card precision@100 of each.
Seconds count from the start of the steady drifted stream ("drift onset at replay speed").

    .venv/bin/python benchmarks/bench_closed_loop.py            # ~12 min on 2 cores
    .venv/bin/python benchmarks/bench_closed_loop.py --print    # only print the sections
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = ("2018-07-21", "2018-08-04")  # the world's last two weeks (WORLD: 125 days from 2018-04-01)
METRICS = ("average_precision", "card_precision_at_100")
# What score PSI did in the retrain's rollout (test_closed_loop_e2e.score_psi_outcome), as the walkthrough says it.
PSI_SENTENCES = {
    "over": "went over `max_score_psi` at a weight and was outranked by the labels (the checks say so).",
    "unjudged": "could not be judged at a weight (too few scored rows for PSI to stand out from chance), and the "
                "labels decided (the checks say so).",
    "within": "stayed within `max_score_psi` at every weight in this run."}
COLUMNS = "330"  # `ferry rollout status`'s table with room for its reasons (narrower, it wraps them tight)


def held_out_metrics(loop: Any, versions: dict[str, str]) -> tuple[dict[str, dict[str, float]], int, int]:
    """Each version's metrics on the held-out weeks, and the weeks' payments and frauds."""
    import numpy as np
    from tests.integration import test_closed_loop_e2e as e2e

    from ferry.adapters.registry import Registry
    from ferry.steps.evaluate import score_exported
    from fraud_detection.features import FEATURE_NAMES, add_features
    from fraud_detection.simulator import SimulatorParams, simulate
    from fraud_detection.workload import FraudDetectionWorkload

    frame = add_features(simulate(SimulatorParams(**{**e2e.WORLD, "amount_scale": e2e.AMOUNT_SCALE})),
                         e2e.LABEL_DELAY_DAYS)
    rows = frame[(frame["tx_datetime"] >= HELD_OUT[0]) & (frame["tx_datetime"] < HELD_OUT[1])].reset_index(drop=True)
    features = rows[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    registry, workload = Registry(loop.settings.mlflow_uri), FraudDetectionWorkload()
    found = {name: workload.evaluate_rows(rows, score_exported(registry.load_pytorch_version(e2e.MODEL, version),
                                                               features), METRICS)
             for name, version in versions.items()}
    return found, len(rows), int(rows["tx_fraud"].sum())


def cli_output(loop: Any, args: list[str]) -> str:
    """What `ferry ARGS` prints against the loop's registry (the CLI's registry is the one settings name)."""
    from typer.testing import CliRunner

    from ferry.adapters.registry import Registry
    from ferry.cli import lineage, rollout
    from ferry.cli.app import app

    registry = Registry(loop.settings.mlflow_uri)
    with contextlib.ExitStack() as stack:
        for module in (lineage, rollout):
            stack.enter_context(_patched(module, registry))
        result = CliRunner().invoke(app, args, env={"COLUMNS": COLUMNS})
    assert result.exit_code == 0, result.output
    return "\n".join(line.rstrip() for line in result.output.splitlines())


@contextlib.contextmanager
def _patched(module: Any, registry: Any) -> Any:
    previous = module._registry
    module._registry = lambda: registry
    try:
        yield
    finally:
        module._registry = previous


def benchmark_section(figures: dict[str, Any], metrics: dict[str, dict[str, float]], payments: int, frauds: int,
                      wall_s: float) -> str:
    from tests.integration import test_closed_loop_e2e as e2e

    labels = {"champion": f"v{figures['first']}, trained on the normal weeks (the champion when drift began)",
              "retrained": f"v{figures['version']}, retrained on {figures['window']} (promoted)",
              "worse": f"v{figures['worse_version']}, the static simulator's normal amounts (rolled back)"}
    rows = [f"| {labels[name]} | {m['average_precision']:.3f} | {m['card_precision_at_100']:.3f} |"
            for name, m in metrics.items()]
    gain = metrics["retrained"]["average_precision"] - metrics["champion"]["average_precision"]
    days = (date.fromisoformat(HELD_OUT[1]) - date.fromisoformat(HELD_OUT[0])).days
    return "\n".join([
        f"Written by `benchmarks/bench_closed_loop.py` (see its docstring for the method). A world of "
        f"{e2e.WORLD['customers']:,} cards and {e2e.WORLD['terminals']:,} terminals; amounts ×{e2e.AMOUNT_SCALE:g} "
        f"from {e2e.DRIFT_STARTS}. Held-out drifted weeks {HELD_OUT[0]}..{HELD_OUT[1]} (no model trained on "
        f"them): {payments:,} payments, {frauds:,} frauds ({frauds / payments:.1%}).",
        "",
        "| model | average precision | card precision@100 |",
        "|---|---:|---:|",
        *rows,
        "",
        f"The retrained model: {gain:+.3f} average precision over the champion it replaced.",
        "",
        f"| at replay speed ({e2e.DRIFTED_RATE:g} payments/s, ~{payments / days / e2e.DRIFTED_RATE:.0f} s an event "
        "day), from the start of the steady drifted stream | s |",
        "|---|---:|",
        f"| the drift alert started the retraining run | {figures['drifted_traffic_to_retraining_started_s']} |",
        f"| the retrain was promoted (trained, shadowed, judged on {figures['labelled_at_decision']:,} labelled "
        f"payments, walked 50 % and 100 %) | {figures['drifted_traffic_to_decision_s']} |",
        f"| the worse challenger was rolled back in shadow (trained, judged on "
        f"{figures['worse_labelled_at_decision']:,} labelled payments) | {figures['worse_challenger_decision_s']} |",
        "",
        f"Machine: {platform.machine()}, 2 cores; wall time {wall_s:.0f} s (bootstrap included).",
    ])


def walkthrough_section(loop: Any, figures: dict[str, Any]) -> str:
    from tests.integration import test_closed_loop_e2e as e2e

    blocks = [(f"ferry lineage {e2e.MODEL}@{figures['version']}", ["lineage", f"{e2e.MODEL}@{figures['version']}"]),
              (f"ferry rollout status {e2e.MODEL} --version {figures['version']}",
               ["rollout", "status", e2e.MODEL, "--version", figures["version"]]),
              (f"ferry rollout status {e2e.MODEL} --version {figures['worse_version']}",
               ["rollout", "status", e2e.MODEL, "--version", figures["worse_version"]])]
    out = [f"Real output of one run (`benchmarks/bench_closed_loop.py`): the drift alert started "
           f"`{figures['workflow']}` {figures['drifted_traffic_to_retraining_started_s']} s into the steady drifted "
           f"stream; its version was promoted at {figures['drifted_traffic_to_decision_s']} s and the worse one rolled "
           f"back at {figures['worse_challenger_decision_s']} s. Score PSI between the retrain and the champion "
           + PSI_SENTENCES[figures["score_psi"]], ""]
    for title, args in blocks:
        out += ["```console", f"$ {title}", cli_output(loop, args), "```", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="only print the sections")
    args = parser.parse_args()
    for folder in (ROOT, ROOT / "platform" / "src", ROOT / "workloads" / "src"):
        sys.path.insert(0, str(folder))
    from tests.integration import test_closed_loop_e2e as e2e

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ferry-loop-") as home, e2e.bootstrapped(Path(home)) as loop:
        print(f"[{time.monotonic() - started:6.1f}s] bootstrapped: v{loop.first} serves", flush=True)
        with contextlib.redirect_stdout(io.StringIO()):  # the checks the e2e prints; the doc quotes the CLI's view
            figures = e2e.drift_and_retrain(loop) | {"first": loop.first}
        print(f"[{time.monotonic() - started:6.1f}s] {figures}", flush=True)
        window_end = figures["window"].split("/")[1]
        assert window_end < HELD_OUT[0], f"the retrain's window {figures['window']} reaches the held-out weeks"
        metrics, payments, frauds = held_out_metrics(loop, {"champion": loop.first, "retrained": figures["version"],
                                                            "worse": figures["worse_version"]})
        walkthrough = walkthrough_section(loop, figures)
    bench = benchmark_section(figures, metrics, payments, frauds, time.monotonic() - started)
    if args.print:
        print(bench, walkthrough, sep="\n\n")
        return
    from tests.support.generated_docs import entry_for, write_section

    write_section(entry_for("docs/benchmarks/closed-loop.md"), bench)
    write_section(entry_for("docs/how-to/walk-the-closed-loop.md"), walkthrough)


if __name__ == "__main__":
    main()
