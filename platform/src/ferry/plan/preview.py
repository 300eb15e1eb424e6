"""The plan's metric preview: what a pull request's training change does to the model's metrics, judged.

`ferry plan --preview` (ferry.steps.preview trains; this module only holds and judges the result) trains the
base and the head spec of each model whose training changes on the workload's small sample (`preview_data`),
in-process with the spec's `training.params` (no tuning), the same seeds on both sides, and evaluates both on
their own sample's test period. A metric the spec judges (its gates and `beat_champion`) that drops by more
than the tolerance fails the check; so does a preview that could not run (an error or the time budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SideResult:
    """One side's mean metrics over the seeds, the rows of its sample and the seconds it took."""

    metrics: dict[str, float]
    rows: int
    seconds: float


@dataclass(frozen=True)
class Preview:
    model: str
    judged: tuple[str, ...]
    tolerance: float  # the largest drop of a judged metric that still passes (absolute)
    epochs: int
    seeds: int
    head: SideResult | None = None
    base: SideResult | None = None  # None for a new model: nothing to compare with
    error: str = ""

    def delta(self, metric: str) -> float | None:
        if self.head is None or self.base is None:
            return None
        return self.head.metrics.get(metric, math.nan) - self.base.metrics.get(metric, math.nan)

    def regressions(self) -> list[str]:
        """The judged metrics the head makes worse by more than the tolerance (a NaN counts as worse)."""
        out = []
        for metric in self.judged:
            delta = self.delta(metric)
            if delta is not None and not delta >= -self.tolerance:
                out.append(metric)
        return out

    @property
    def passed(self) -> bool:
        return not self.error and self.head is not None and not self.regressions()

    @property
    def verdict(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        worse = self.regressions()
        if worse:
            return f"worse: {', '.join(worse)} dropped by more than {self.tolerance:g}"
        return "first version: nothing to compare" if self.base is None else f"within tolerance {self.tolerance:g}"
