"""The rollout's paired sample from the prediction log: what each model scored, in answer or in shadow, joined
with the labels that came back (ferry.rollout.outcomes judges it; ferry.serving.shadow writes the shadow log).

A transaction counts once: its first scoring (a retried request is answered from the first one's features, and
never mirrored again). It is paired when one version answered it and the other scored it in shadow, and both
scores exist; a shadow score that failed leaves it unpaired and is counted as a shadow failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ferry.contract.names import LOG_PREDICTIONS, LOG_SHADOW
from ferry.rollout.outcomes import OutcomesUnavailable, PairedSample
from ferry.serving.prediction_log import join_key, join_labels, read_served
from ferry.serving.quality import read_labels


class LogOutcomes:
    """An `OutcomeSource` over one model's prediction, shadow and label logs under `uri`."""

    def __init__(self, uri: str, model: str, workload: Any) -> None:
        self.uri, self.model, self.workload = uri, model, workload
        self.key = join_key(workload.raw_request_model, workload.label_model)

    def evaluate(self, rows: Any, scores: np.ndarray, names: Sequence[str]) -> Mapping[str, float]:
        result: Mapping[str, float] = self.workload.evaluate_rows(rows, scores, names)
        return result

    def sample(self, champion: str, challenger: str, since_unix: float) -> PairedSample:
        try:
            answered, shadowed = self._scored(since_unix, (champion, challenger))
            labels = read_labels(self.uri, self.model, self.workload.label_model)
        except (OSError, ValueError) as exc:  # storage down, or a file it cannot parse
            raise OutcomesUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        if answered is None or shadowed is None:
            return _empty()
        mine = shadowed[shadowed["version"] == challenger]
        failures = int(mine["score"].isna().sum())
        pairs = answered.merge(shadowed.dropna(subset=["score"]), on=self.key, suffixes=("", "_shadow"))
        pairs = pairs[pairs["version"] != pairs["version_shadow"]]
        joined = join_labels(pairs, labels, self.key)
        labelled = joined[joined["arrival_time"].notna()].reset_index(drop=True)
        by_champion = labelled["version"] == champion
        champion_scores = np.where(by_champion, labelled["score"], labelled["score_shadow"])
        challenger_scores = np.where(by_champion, labelled["score_shadow"], labelled["score"])
        raw = list(self.workload.raw_request_model.model_fields)
        label_fields = [c for c in self.workload.label_model.model_fields if c != self.key]
        rows = self.workload.history_from_log(labelled[[*raw, *label_fields]])
        order = labelled.reset_index().set_index(self.key).loc[rows[self.key], "index"].to_numpy()
        positives = int(labelled[label_fields].eq(True).any(axis=1).sum())
        return PairedSample(rows, champion_scores[order].astype(np.float64), challenger_scores[order].astype(
            np.float64), positives, failures, len(mine))

    def _scored(self, since_unix: float, versions: tuple[str, str]) -> tuple[Any, Any]:
        """The first scoring of each transaction since `since_unix` by either version, and its shadow scores."""
        import pyarrow.compute as pc

        mine = pc.field("version").isin(list(versions))
        raw = list(self.workload.raw_request_model.model_fields)
        try:
            answered = read_served(self.uri, LOG_PREDICTIONS, self.model, [*raw, "version", "score"], since_unix,
                                   mine).to_pandas()
            shadowed = read_served(self.uri, LOG_SHADOW, self.model, [self.key, "version", "score"], since_unix,
                                   mine).to_pandas()
        except FileNotFoundError:
            return None, None
        return answered.drop_duplicates(self.key), shadowed.drop_duplicates(self.key)


def _empty() -> PairedSample:
    import pandas as pd

    return PairedSample(pd.DataFrame(), np.zeros(0), np.zeros(0), 0)
