"""The rollout's paired sample for a ranking workload: the clicks that came back, each a hit or not for both models.

The router logs every answer with the items it listed, and, for mirrored requests, the list the other model
would have given (ferry.serving.feedback). A click (the workload's `feedback_model`: the user and the item) is
attributed to that user's latest answer before the click arrived that has both lists; it is a hit for a model
when that model's list held the item. So both models are judged on exactly the same clicks, which is what the
controller's paired bootstrap (ferry.rollout.outcomes) needs; the metric is the hit rate
(`names.FEEDBACK_HIT_RATE`). A click posted twice counts once; a click with no such answer before it (the user
was answered before the rollout, or not mirrored) is not counted. `positives` are the clicks at least one of the
two lists held: the clicks that can tell the models apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ferry.contract.names import FEEDBACK_HIT_RATE, LOG_LABELS, LOG_PREDICTIONS, LOG_SHADOW
from ferry.rollout.outcomes import OutcomesUnavailable, PairedSample
from ferry.serving.feedback import ITEMS_COLUMN, REQUEST_ID_COLUMN, feedback_item
from ferry.serving.prediction_log import SERVING_TIME_COLUMN, join_key, read_log

FEEDBACK_METRICS = (FEEDBACK_HIT_RATE,)


class FeedbackOutcomes:
    """An `OutcomeSource` over one ranking model's answer, shadow and feedback logs under `uri`."""

    def __init__(self, uri: str, model: str, workload: Any) -> None:
        self.uri, self.model = uri, model
        self.key = join_key(workload.request_model, workload.feedback_model)
        self.item = feedback_item(workload)

    def evaluate(self, rows: Any, scores: np.ndarray, names: Sequence[str]) -> Mapping[str, float]:
        """The hit rate of `scores` (1.0 where the model's list held the clicked item)."""
        unknown = set(names) - set(FEEDBACK_METRICS)
        if unknown:
            raise KeyError(f"feedback is judged on {', '.join(FEEDBACK_METRICS)}, not {sorted(unknown)}")
        rate = float(np.mean(scores)) if len(scores) else float("nan")
        return {name: rate for name in names}

    def sample(self, champion: str, challenger: str, since_unix: float) -> PairedSample:
        try:
            logged = self._read(since_unix, (champion, challenger))
        except (OSError, ValueError) as exc:
            raise OutcomesUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        if logged is None:
            import pandas as pd

            return PairedSample(pd.DataFrame(), np.zeros(0), np.zeros(0), 0)
        answered, shadowed, clicks = logged
        mine = shadowed[shadowed["version"] == challenger]
        failures = int(mine[ITEMS_COLUMN].isna().sum())
        pairs = answered.merge(shadowed.dropna(subset=[ITEMS_COLUMN]), on=REQUEST_ID_COLUMN,
                               suffixes=("", "_shadow"))
        pairs = pairs[pairs["version"] != pairs["version_shadow"]]
        attributed = self._attribute(clicks, pairs)
        by_champion = (attributed["version"] == champion).to_numpy()
        hits = np.array([item in set(listed) for item, listed in zip(
            attributed[self.item], attributed[ITEMS_COLUMN], strict=True)], dtype=bool)
        shadow_hits = np.array([item in set(listed) for item, listed in zip(
            attributed[self.item], attributed[f"{ITEMS_COLUMN}_shadow"], strict=True)], dtype=bool)
        champion_hits = np.where(by_champion, hits, shadow_hits)
        challenger_hits = np.where(by_champion, shadow_hits, hits)
        rows = attributed[[self.key, self.item, REQUEST_ID_COLUMN, "version"]].reset_index(drop=True)
        return PairedSample(rows, champion_hits.astype(np.float64), challenger_hits.astype(np.float64),
                            int((champion_hits | challenger_hits).sum()), failures, len(mine))

    def _attribute(self, clicks: Any, pairs: Any) -> Any:
        """Each click with the latest paired answer to its user served before it arrived (clicks without one
        are dropped)."""
        import pandas as pd

        if clicks.empty or pairs.empty:
            return pd.DataFrame(columns=[self.key, self.item, REQUEST_ID_COLUMN, "version", ITEMS_COLUMN,
                                         f"{ITEMS_COLUMN}_shadow"])
        # Sorted first, so a click posted twice keeps its first arrival (and the order merge_asof needs).
        clicks = clicks.sort_values("arrival_time", kind="stable").drop_duplicates([self.key, self.item])
        pairs = pairs.sort_values(SERVING_TIME_COLUMN, kind="stable")
        joined = pd.merge_asof(clicks, pairs, left_on="arrival_time", right_on=SERVING_TIME_COLUMN, by=self.key,
                               direction="backward")
        return joined[joined[REQUEST_ID_COLUMN].notna()]

    def _read(self, since_unix: float, versions: tuple[str, str]) -> tuple[Any, Any, Any] | None:
        import pyarrow.compute as pc

        since = datetime.fromtimestamp(since_unix, UTC)
        mine = pc.field("version").isin(list(versions)) & (pc.field(SERVING_TIME_COLUMN) >= since)
        try:
            answered = read_log(self.uri, LOG_PREDICTIONS, self.model, [self.key, REQUEST_ID_COLUMN, ITEMS_COLUMN,
                                                                        "version", SERVING_TIME_COLUMN], mine)
            shadowed = read_log(self.uri, LOG_SHADOW, self.model, [REQUEST_ID_COLUMN, ITEMS_COLUMN, "version"], mine)
            clicks = read_log(self.uri, LOG_LABELS, self.model, [self.key, self.item, "arrival_time"],
                              pc.field("arrival_time") >= since)
        except FileNotFoundError:
            return None
        return answered.to_pandas(), shadowed.to_pandas(), clicks.to_pandas()

