"""Reference distributions stored with a model version: what live traffic is compared against for drift.

At register time (`ferry step register`) every input feature and the model's score get a histogram of the
training rows: cut points at the training data's deciles and the number of training rows in each bin.
The router (`ferry.serving.drift`) bins live rows against the champion's cut points and exports the
population stability index (PSI) of each feature and of the score.

Why deciles of the training data: equal-frequency bins give every bin ~10 % of the reference mass, so no
bin's share is tiny and PSI is not dominated by the epsilon that guards empty bins; the usual PSI
thresholds (0.1 watch, 0.25 act) assume about ten such bins. Repeated quantiles are merged, so a binary
feature gets two bins of real data (plus an empty one below), a constant feature one.

Bins: with ascending cut points c0 < c1 < ... < ck, bin 0 is (-inf, c0), bin i is [c(i-1), ci), bin k+1 is
[ck, +inf) - `numpy.searchsorted(cuts, x, side="right")`. Values outside the training range land in the
outer bins, which is exactly where drift shows. NaN lands in the last bin.

The JSON (`REFERENCE_ARTIFACT` in the registering run, found through the version's `ferry.reference` tag)
is small: ~12 numbers per feature. This module is pure numpy + pydantic; `registry.py` does the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ferry.contract.errors import FerryError
from ferry.contract.metrics import FEATURE_SCORE

FORMAT_VERSION = 1
QUANTILES: tuple[float, ...] = tuple(i / 10 for i in range(1, 10))
SCORE = FEATURE_SCORE  # the score's histogram, and the `feature` label of its PSI
MAX_ROWS = 200_000  # rows a reference is computed from at most (a seeded sample beyond that)


class BadReference(FerryError, ValueError):
    """A reference that cannot be built or read; the message names its source and what to do."""


class Histogram(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cuts: list[float] = Field(description="Ascending interior cut points (the training data's deciles).")
    counts: list[int] = Field(description="Training rows per bin; one more entry than `cuts`.")

    @model_validator(mode="after")
    def _shape(self) -> Histogram:
        if len(self.counts) != len(self.cuts) + 1:
            raise ValueError(f"{len(self.cuts)} cuts need {len(self.cuts) + 1} counts, got {len(self.counts)}")
        if any(b <= a for a, b in zip(self.cuts, self.cuts[1:], strict=False)):
            raise ValueError("cuts must be strictly ascending")
        if any(c < 0 for c in self.counts) or sum(self.counts) <= 0:
            raise ValueError("counts must be non-negative and not all zero")
        return self

    @property
    def bins(self) -> int:
        return len(self.counts)


class Reference(BaseModel):
    """Per-feature histograms (in the model's input column order) and the score's, of `rows` training rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: int = FORMAT_VERSION
    rows: int = Field(ge=1)
    features: dict[str, Histogram]
    score: Histogram | None = None

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, text: str, source: str) -> Reference:
        try:
            reference = cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            raise BadReference(f"{source}: field {where}: {first['msg']}; re-register the version to "
                                 "rebuild its reference") from exc
        if reference.format != FORMAT_VERSION:
            raise BadReference(f"{source}: reference format {reference.format} is not {FORMAT_VERSION}; "
                                 "re-register the version with this ferry")
        return reference


def bin_index(cuts: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.searchsorted(cuts, values, side="right")


def histogram(values: np.ndarray, quantiles: Sequence[float] = QUANTILES) -> Histogram:
    """Decile cut points of `values` (repeats merged) and the count of values in each bin."""
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise BadReference("no finite values to build a histogram from")
    # "lower": cut points are values seen in training, so a binary feature is cut at 0 and 1, not at 0.3
    cuts = np.unique(np.quantile(finite, quantiles, method="lower"))
    counts = np.bincount(bin_index(cuts, data), minlength=cuts.size + 1)
    return Histogram(cuts=cuts.tolist(), counts=counts.tolist())


def sample_rows(matrix: np.ndarray, limit: int = MAX_ROWS, seed: int = 0) -> np.ndarray:
    """At most `limit` rows, a seeded sample: deciles of 200k rows are as good as of all of them."""
    if matrix.shape[0] <= limit:
        return matrix
    index = np.sort(np.random.default_rng(seed).choice(matrix.shape[0], size=limit, replace=False))
    return matrix[index]


def build_reference(features: np.ndarray, names: Sequence[str], scores: np.ndarray | None) -> Reference:
    """The reference of a training matrix (rows x `names`) and the model's scores on the same rows."""
    matrix = np.asarray(features)
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise BadReference(f"training matrix of shape {matrix.shape} does not have one column per feature "
                             f"({len(names)}: {', '.join(names)})")
    if SCORE in names:
        raise BadReference(f"a feature is named {SCORE!r}, the label the score's drift is exported under; "
                             "rename the feature")
    histograms = {}
    for i, name in enumerate(names):
        try:
            histograms[name] = histogram(matrix[:, i])
        except BadReference as exc:
            raise BadReference(f"feature {name!r}: {exc}; the workload's feature engineering must give it "
                               "finite numbers on some training rows") from None
    score = None if scores is None else histogram(np.asarray(scores))
    return Reference(rows=int(matrix.shape[0]), features=histograms, score=score)


def workload_feature_names(workload: Any) -> tuple[str, ...]:
    """The model's input columns, in order: the workload's `feature_names`, else its request model's fields
    without the routing key (the same rule as the router's `WorkloadView`)."""
    names = getattr(workload, "feature_names", None)
    if names:
        return tuple(names)
    key = getattr(workload, "routing_key", None)
    fields: Mapping[str, Any] = workload.request_model.model_fields
    return tuple(name for name in fields if name != key)
