"""Benchmark: how the judgement on labels (`rollout.outcomes`) decides, over repeated rollouts.

Not a test: it prints figures and writes a section of docs/benchmarks/outcomes.md. The models and traffic are
real ferry ones, the rollouts run the real controller on a simulated clock:

- data: the committed `fraud-detector` spec's simulator params and split (`ferry.steps` would train on the same
  rows), featurized by the workload (`prepare()`);
- models: the workload's FraudMLP trained by its own epoch loop (`_setup` + `train_epoch`, the spec's params and
  epochs): a champion (seed 0), an *equal* challenger (the same spec, seed 1), and a *worse* one (seed 2 on
  shuffled training labels: its errors, latency and score distribution look like a model's, but it ranks fraud
  at random);
- traffic: the spec's test week, each model's scores on it. A run is one rollout: the payments of a bootstrap
  resample of the week's cards (cluster bootstrap: a card's payments stay together), in time order, reach the
  controller's paired sample in 20 equal parts, one per 30 s check; the traffic checks are healthy throughout;
- policy: the `rollout.outcomes` defaults (average precision, margin 0.05, 95 %, 500 labelled with 20
  positives, 300 resamples), a 2 min shadow stage, the spec's steps, and a hold timeout long enough for all labels.

For each challenger it counts promotions, rollbacks on labels and rollbacks for lack of evidence, and the
labelled payments (and frauds among them) each decision had read. A "false promotion" is a promoted worse
challenger; a "false rollback" an equal one rolled back. Every loop is bounded (runs x 20 checks).

    .venv/bin/python benchmarks/bench_outcomes.py [--runs 20]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PARTS = 20


@dataclass(frozen=True)
class Decided:
    action: str
    on_labels: bool
    labelled: int
    positives: int


def train(prepared: dict, spec, seed: int, shuffled: bool) -> torch.nn.Module:
    from fraud_detection.model import train_epoch
    from fraud_detection.training import _setup

    torch.manual_seed(seed)
    y = prepared["y_train"].copy()
    if shuffled:
        np.random.default_rng(seed).shuffle(y)
    config = {"params": dict(spec.spec.training.params), "x_train": prepared["x_train"]}
    model, optimizer = _setup(config, "cpu")
    x_t, y_t = torch.as_tensor(prepared["x_train"]), torch.as_tensor(y)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(spec.spec.training.epochs):
        train_epoch(model, optimizer, x_t, y_t, spec.spec.training.batch_size, generator)
    return model.eval()


class Stream:
    """The controller's OutcomeSource: a resampled week arriving in PARTS parts, one per check."""

    def __init__(self, rows, champion: np.ndarray, challenger: np.ndarray, seed: int) -> None:
        from fraud_detection.metrics import evaluate_named

        rng = np.random.default_rng(seed)
        cards = rows["customer_id"].unique()
        drawn = rng.choice(cards, size=len(cards), replace=True)
        index = np.concatenate([np.flatnonzero(rows["customer_id"].to_numpy() == card) for card in drawn])
        index = index[np.argsort(rows["tx_datetime"].to_numpy()[index], kind="stable")]
        self.rows = rows.iloc[index].reset_index(drop=True)
        self.rows["transaction_id"] = np.arange(len(self.rows))  # a resampled payment is a new payment
        self.champion, self.challenger = champion[index], challenger[index]
        self.looks, self.evaluate_named = 0, evaluate_named

    def sample(self, champion: str, challenger: str, since_unix: float):
        from ferry.rollout.outcomes import PairedSample

        self.looks += 1
        n = len(self.rows) * min(self.looks, PARTS) // PARTS
        rows = self.rows.iloc[:n]
        return PairedSample(rows, self.champion[:n], self.challenger[:n], int(rows["tx_fraud"].sum()), 0, n)

    def evaluate(self, rows, scores, names):
        return self.evaluate_named(rows, scores, names)


def rollout(spec, stream: Stream) -> Decided:
    from prometheus_client import CollectorRegistry
    from tests.unit.rollout.test_controller import Lab, Traffic

    from ferry.rollout.controller import Controller
    from ferry.rollout.metrics import RolloutMetrics
    from ferry.spec.models import OutcomeAnalysis, ShadowSpec

    rollout_spec = spec.spec.rollout.model_copy(update={
        "shadow": ShadowSpec(duration="2m"), "outcomes": OutcomeAnalysis(), "hold_timeout": "30m"})
    model = spec.model_copy(update={"spec": spec.spec.model_copy(update={"rollout": rollout_spec})})
    lab = Lab(aliases={"champion": "1"})
    outcome = Controller(lab.registry, model, Traffic(), lab.clock, RolloutMetrics(CollectorRegistry()),
                         outcomes=stream).run("2")
    n = len(stream.rows) * min(stream.looks, PARTS) // PARTS
    return Decided(outcome.action.value, "labels" in outcome.reason, n, int(stream.rows["tx_fraud"].iloc[:n].sum()))


def summary(name: str, decided: list[Decided], true_delta: float, wrong: str) -> str:
    promoted = sum(d.action == "promote" for d in decided)
    on_labels = sum(d.action == "rollback" and d.on_labels for d in decided)
    no_evidence = sum(d.action == "rollback" and not d.on_labels for d in decided)
    labelled = [d.labelled for d in decided]
    positives = [d.positives for d in decided]
    wrong_count = promoted if wrong == "promote" else on_labels + no_evidence
    return (f"| {name} | {true_delta:+.3f} | {len(decided)} | {promoted} | {on_labels} | {no_evidence} | "
            f"**{wrong_count}/{len(decided)}** | {statistics.median(labelled):,.0f} ({min(labelled):,}-"
            f"{max(labelled):,}) | {statistics.median(positives):.0f} ({min(positives)}-{max(positives)}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--print", action="store_true", help="only print the section")
    args = parser.parse_args()
    for folder in (ROOT, ROOT / "platform" / "src", ROOT / "workloads" / "src"):
        sys.path.insert(0, str(folder))
    from ferry.adapters.workloads import load_workload
    from ferry.spec import load_specs
    from fraud_detection.metrics import evaluate_named
    from fraud_detection.model import predict_proba

    started = time.monotonic()
    torch.set_num_threads(2)
    spec = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])[0][0].model
    workload = load_workload(spec.spec.workload)
    frame = workload.featurize(workload.load_data(spec.spec.data, Path("/tmp")), spec.spec.data)
    prepared = workload.prepare(frame, spec.spec.data)
    test = prepared["test_frame"].reset_index(drop=True)
    scores = {name: predict_proba(train(prepared, spec, seed, shuffled), prepared["x_test"])
              for name, seed, shuffled in (("champion", 0, False), ("equal", 1, False), ("worse", 2, True))}
    week = {name: evaluate_named(test, s, ["average_precision"])["average_precision"] for name, s in scores.items()}
    print(f"[{time.monotonic() - started:6.1f}s] trained; test-week AP {week}", flush=True)
    lines = []
    for name, wrong in (("equal", "rollback"), ("worse", "promote")):
        decided = [rollout(spec, Stream(test, scores["champion"], scores[name], seed)) for seed in range(args.runs)]
        lines.append(summary(name, decided, week[name] - week["champion"], wrong))
        print(f"[{time.monotonic() - started:6.1f}s] {lines[-1]}", flush=True)
    body = "\n".join([
        f"Written by `benchmarks/bench_outcomes.py` (see its docstring for the method). The `fraud-detector` spec's "
        f"test week: {len(test):,} payments, {int(test['tx_fraud'].sum())} frauds; test-week average precision of "
        f"the champion {week['champion']:.3f}, the equal challenger {week['equal']:.3f}, the worse one "
        f"{week['worse']:.3f}. Each run is one rollout under the default `rollout.outcomes` policy on a cluster "
        f"bootstrap of the week, its labels arriving in {PARTS} parts, one per check.",
        "",
        "| challenger | AP − champion (whole week) | runs | promoted | rolled back on labels | rolled back, no "
        "evidence | wrong decisions | labelled payments read at the decision, median (range) | frauds among them |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *lines,
        "",
        f"Wrong decisions: an equal challenger rolled back, a worse one promoted (target 0 of {args.runs} each). "
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads; wall time "
        f"{time.monotonic() - started:.0f} s.",
    ])
    if args.print:
        print(body)
        return
    from tests.support.generated_docs import entry_for, write_section

    write_section(entry_for("docs/benchmarks/outcomes.md"), body)
    print("wrote docs/benchmarks/outcomes.md (section of benchmarks/bench_outcomes.py)")


if __name__ == "__main__":
    main()
