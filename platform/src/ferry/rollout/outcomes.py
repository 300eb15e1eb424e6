"""Judgement on outcomes, pure: both models' scores on the same labelled transactions in, a verdict out.

During a rollout with `rollout.shadow`, every sampled transaction is scored by both models (one answers, the
other scores in shadow), so when its label arrives the two can be compared on exactly the same rows: a paired
comparison, far tighter than comparing two different slices of traffic. For each metric the spec names
(`rollout.outcomes.metrics`, computed by the workload) the difference challenger - champion gets a paired
bootstrap interval: resample transactions with replacement, score both models on the same resample.

- too few paired, labelled transactions (or positives among them): INCONCLUSIVE, the rollout holds;
- the upper bound below -margin (worse beyond the margin, with the stated confidence): FAIL;
- the lower bound at or above -margin (not worse beyond it): PASS;
- anything between: INCONCLUSIVE; more labels narrow the interval.

The bootstrap's generator is seeded by the sample's size, so the same labels always give the same verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ferry.contract.errors import FerryError
from ferry.rollout.policy import Verdict
from ferry.spec.models import OutcomeAnalysis

# The workload's metrics of scores on its rows: (rows, scores, names) -> {name: value} (fraud_detection:
# evaluate_rows). Rows are whatever the workload reads (a pandas frame); the platform only indexes them.
Evaluate = Callable[[Any, np.ndarray, Sequence[str]], Mapping[str, float]]


class OutcomesUnavailable(FerryError):
    """The prediction log could not be read (the rollout holds on it, like on missing metrics)."""


class OutcomeSource(Protocol):
    """Where the controller gets its paired sample (ferry.steps.outcomes reads the prediction log)."""

    def sample(self, champion: str, challenger: str, since_unix: float) -> PairedSample | None:
        """Transactions scored since `since_unix` by both versions, with labels; None when none are logged."""

    def evaluate(self, rows: Any, scores: np.ndarray, names: Sequence[str]) -> Mapping[str, float]:
        """The workload's metrics `names` of `scores` on `rows`."""


@dataclass(frozen=True)
class PairedSample:
    """Labelled transactions scored by both models, row-aligned."""

    rows: Any  # the workload's rows (pandas), with their labels, in the order of the score arrays
    champion: np.ndarray
    challenger: np.ndarray
    positives: int
    shadow_failures: int = 0  # sampled transactions the shadow model failed to score (no pair)
    shadow_rows: int = 0  # sampled transactions scored in shadow, labelled or not

    @property
    def labelled(self) -> int:
        return len(self.champion)


@dataclass(frozen=True)
class MetricEvidence:
    name: str
    champion: float
    challenger: float
    lower: float  # one-sided bounds at the policy's confidence of challenger - champion
    upper: float

    @property
    def delta(self) -> float:
        return self.challenger - self.champion


@dataclass(frozen=True)
class OutcomeEvidence:
    verdict: Verdict
    reasons: tuple[str, ...]
    labelled: int
    positives: int
    metrics: tuple[MetricEvidence, ...] = ()

    def bounds(self) -> dict[str, tuple[float, float, float]]:
        """Per metric: challenger - champion, and its lower and upper bounds."""
        return {m.name: (m.delta, m.lower, m.upper) for m in self.metrics}

    def record(self) -> dict[str, Any]:
        """As the check record keeps it (`ferry rollout status`): per metric [delta, lower, upper]."""
        return {"labelled": self.labelled, "positives": self.positives,
                **{m.name: [round(m.delta, 4), round(m.lower, 4), round(m.upper, 4)] for m in self.metrics}}


def judge(policy: OutcomeAnalysis, sample: PairedSample | None, evaluate: Evaluate) -> OutcomeEvidence:
    """The verdict of the labels so far."""
    if sample is None or sample.labelled < policy.min_labelled or sample.positives < policy.min_positives:
        labelled, positives = (sample.labelled, sample.positives) if sample else (0, 0)
        short = [f"{labelled} paired labelled transactions (< {policy.min_labelled})"] if (
            labelled < policy.min_labelled) else []
        short += [f"{positives} positive (< {policy.min_positives})"] if positives < policy.min_positives else []
        return OutcomeEvidence(Verdict.INCONCLUSIVE, ("too few labels to judge outcomes: " + ", ".join(short),),
                               labelled, positives)
    evidence = paired_bootstrap(policy, sample, evaluate)
    worse = [m for m in evidence if m.upper < -policy.margin]
    unsure = [m for m in evidence if m.lower < -policy.margin and m not in worse]
    verdict = Verdict.FAIL if worse else Verdict.INCONCLUSIVE if unsure else Verdict.PASS
    described = [_describe(m, policy) for m in (worse or unsure or evidence)]
    prefix = ("worse on labels" if worse else "not yet known on labels" if unsure else "not worse on labels")
    reasons = (f"{prefix} ({sample.labelled} paired, {sample.positives} positive): " + "; ".join(described),)
    return OutcomeEvidence(verdict, reasons, sample.labelled, sample.positives, evidence)


def _describe(metric: MetricEvidence, policy: OutcomeAnalysis) -> str:
    level = round(policy.confidence * 100)
    return (f"{metric.name} {metric.challenger:.3f} vs {metric.champion:.3f} ({metric.delta:+.3f}, {level}% "
            f"bounds [{metric.lower:+.3f}, {metric.upper:+.3f}], margin -{policy.margin})")


def paired_bootstrap(policy: OutcomeAnalysis, sample: PairedSample, evaluate: Evaluate) -> tuple[MetricEvidence, ...]:
    names = list(policy.metrics)
    champion = evaluate(sample.rows, sample.champion, names)
    challenger = evaluate(sample.rows, sample.challenger, names)
    rng = np.random.default_rng(sample.labelled)
    deltas: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(policy.resamples):
        index = rng.integers(0, sample.labelled, sample.labelled)
        rows = sample.rows.iloc[index]
        base = evaluate(rows, sample.champion[index], names)
        other = evaluate(rows, sample.challenger[index], names)
        for name in names:
            delta = other[name] - base[name]
            if not math.isnan(delta):  # a resample with one class has no AP: it says nothing
                deltas[name].append(delta)
    tail = 1 - policy.confidence
    return tuple(MetricEvidence(name, float(champion[name]), float(challenger[name]),
                                *_bounds(deltas[name], tail)) for name in names)


def _bounds(deltas: list[float], tail: float) -> tuple[float, float]:
    if not deltas:
        return -math.inf, math.inf
    values = np.asarray(deltas)
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))
