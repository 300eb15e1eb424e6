"""recommender as a ferry Workload: MovieLens 100K, the temporal split, an item autoencoder, ranking metrics.

The model's input is a user's row of rated items and its output a score for every item, so `prepare`'s
arrays are such rows (`x_*`: the history before the period, `y_*`: what the user rated in it), which the
platform's tune, train and evaluate steps pass around as for any workload. Heavy imports (torch, ray) happen
inside the methods that need them, so `ferry validate` reads `facts` without loading the ML stack.

What is registered is `RecommenderScorer` (`scoring_module`): user ids in, top items out, each user's history
inside. Serving takes `RecommendRequest`s on `POST /recommend` (`endpoint`, `model_inputs`, `answers`: the
ranking capability of ferry.serving.ranking) and records, per answer, the mean popularity percentile of the
items it returned: the distribution the canary's PSI compares between champion and challenger. Clicks come back
on `POST /recommend/feedback` (`feedback_model`, `answered_items`: ferry.serving.feedback), and `ferry replay`
sends the ratings `data.params.holdout_share` kept out of training and serving as such clicks
(`feedback_history`), so a canary can be judged on the hit rate of real users' next ratings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ferry.spec.checks import WorkloadFacts
from ferry.spec.models import DataSpec
from recommender.params import DataParams, TrainingParams
from recommender.ranking import ranking_metrics
from recommender.split import newest_share, temporal_split

METRICS = ("recall_at_10", "ndcg_at_10", "coverage_at_10")
MAX_K = 100
PREVIEW_USERS = 300


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(ge=0, lt=2**63, description="MovieLens user id; also the sticky key for canary routing.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many items to return.")
    exclude_seen: bool = Field(True, description="Leave out items the user rated before the model's cutoff.")


class RecommendedItem(BaseModel):
    item_id: int
    score: float


class Recommendations(BaseModel):
    items: list[RecommendedItem] = Field(description="Best first; fewer than k when exclude_seen leaves fewer.")
    fallback: bool = Field(description="True when the user is unknown to the model and the list is the most "
                                       "popular items instead.")


class Click(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(ge=0, lt=2**63, description="Who clicked: the user the recommendations were for.")
    item_id: int = Field(ge=0, lt=2**63, description="The item the user chose (listed or not).")


class RecommenderWorkload:
    name = "recommender"
    facts = WorkloadFacts(metrics=METRICS, data_params=DataParams, training_params=TrainingParams,
                          sources=("dataset", "parquet"), scores_test_rows=False,
                          feature_drift=False, feedback=True)
    request_model = RecommendRequest
    feedback_model = Click
    response_model = Recommendations
    routing_key = "user_id"
    endpoint = "recommend"

    def load_data(self, data: DataSpec, data_root: Path) -> pd.DataFrame:
        """The ratings a model is built from: every loaded rating but each user's newest `holdout_share`."""
        frame = self._ratings(data, data_root)
        held_out = newest_share(frame, DataParams.model_validate(data.params).holdout_share)
        return frame[~held_out].reset_index(drop=True)

    def feedback_history(self, data: DataSpec, data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        """What `ferry replay` sends, in time order: for each held-out rating, a request for the user's top 10
        and then the click on the item the user rated (row-aligned frames)."""
        frame = self._ratings(data, data_root)
        held_out = frame[newest_share(frame, DataParams.model_validate(data.params).holdout_share)]
        held_out = held_out.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
        requests = pd.DataFrame({"user_id": held_out["user_id"].astype(np.int64), "k": 10, "exclude_seen": True})
        return requests, held_out[["user_id", "item_id"]].astype(np.int64)

    def _ratings(self, data: DataSpec, data_root: Path) -> pd.DataFrame:
        params = DataParams.model_validate(data.params)
        if data.source == "dataset":
            from recommender.movielens import load_ratings

            frame = load_ratings()
        elif data.source == "parquet" and data.path is not None:
            path = (data_root / data.path).resolve()
            if not path.is_relative_to(data_root.resolve()):
                raise ValueError(f"data path {data.path!r} leaves the data root {data_root}")
            frame = pd.read_parquet(path, columns=["user_id", "item_id", "rating", "timestamp"])
        else:
            raise ValueError(f"recommender loads source 'dataset' (MovieLens 100K) or 'parquet' (a path to ratings "
                             f"with user_id, item_id, rating, timestamp), not {data.source!r}")
        if params.max_users is not None:
            keep = np.sort(frame["user_id"].unique())[:params.max_users]
            frame = frame[frame["user_id"].isin(keep)].reset_index(drop=True)
        return frame

    def featurize(self, frame: pd.DataFrame, data: DataSpec) -> pd.DataFrame:
        return frame  # the model learns from the interactions themselves

    def dataset_digest(self, frame: pd.DataFrame) -> str:
        hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]

    def prepare(self, frame: pd.DataFrame, data: DataSpec) -> dict[str, Any]:
        params = DataParams.model_validate(data.params)
        split = temporal_split(frame, params.valid_share, params.test_share)
        valid_users = np.flatnonzero(split.valid.sum(axis=1) > 0)
        test_users = np.flatnonzero(split.test.sum(axis=1) > 0)
        if len(valid_users) == 0 or len(test_users) == 0:
            raise ValueError("the split leaves no user with validation or test ratings; raise valid_share/test_share "
                             "or load more ratings per user")
        # Rows of rated items are the model's input: a user's history up to the period being predicted.
        history = np.maximum(split.fit, split.valid)  # 1.0 where rated: a re-rated item counts once
        return {"x_train": split.fit, "y_train": split.fit,
                "x_valid": split.fit[valid_users], "y_valid": split.valid[valid_users],
                "x_test": history[test_users], "y_test": split.test[test_users],
                "valid_users": valid_users, "test_users": test_users,
                "history": np.maximum(history, split.test),  # every rating: what serving knows of each user
                "user_ids": split.user_ids, "item_ids": split.item_ids,
                "dropped_cold_items": split.dropped_cold_items}

    def train_loop_per_worker(self, config: dict[str, Any]) -> None:
        from recommender.training import train_loop_per_worker

        train_loop_per_worker(config)

    def tune_trainable(self, config: dict[str, Any], data: dict[str, Any], fixed_params: dict[str, Any]) -> None:
        from recommender.training import tune_trainable

        tune_trainable(config, data, fixed_params)

    def load_checkpoint(self, folder: Path) -> Any:
        from recommender.training import load_checkpoint_model

        return load_checkpoint_model(folder)

    def evaluate(self, prepared: Mapping[str, Any], scores: Any) -> dict[str, float]:
        return ranking_metrics(np.asarray(scores), prepared["x_test"], prepared["y_test"])

    def preview_data(self, data: DataSpec) -> DataSpec:
        """The plan's metric preview trains on the first PREVIEW_USERS users (fewer if the spec keeps fewer)."""
        kept = DataParams.model_validate(data.params).max_users
        return data.model_copy(update={"params": {**data.params, "max_users": min(kept or PREVIEW_USERS,
                                                                                   PREVIEW_USERS)}})

    def fit_in_process(self, prepared: Mapping[str, Any], params: Mapping[str, Any], epochs: int, batch_size: int,
                       seed: int) -> Any:
        from recommender.training import fit_in_process

        return fit_in_process(prepared, params, epochs, batch_size, seed)

    def predict_batch(self, model: Any, features: Any) -> Any:
        from recommender.model import score_rows

        return score_rows(model, np.asarray(features, dtype=np.float32))

    def example_request(self) -> dict[str, Any]:
        return {"user_id": 42, "k": 10, "exclude_seen": True}

    def input_example(self, prepared: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The registered scorer's inputs: a few known user ids and `exclude_seen` flags."""
        users = np.asarray(prepared["user_ids"][:4], dtype=np.int64)
        return users, np.ones(len(users), dtype=bool)

    def scoring_module(self, model: Any, prepared: Mapping[str, Any]) -> Any:
        from recommender.serving import build_scorer

        return build_scorer(model, prepared)

    def drift_reference(self, prepared: Mapping[str, Any], scorer: Any) -> None:
        """None: the model's input is a user id, not feature columns to compare; the canary compares the two
        versions' answers instead (`answers`' popularity percentile)."""
        return None

    def model_inputs(self, rows: Sequence[RecommendRequest]) -> tuple[np.ndarray, np.ndarray]:
        users = np.fromiter((row.user_id for row in rows), dtype=np.int64, count=len(rows))
        return users, np.fromiter((row.exclude_seen for row in rows), dtype=bool, count=len(rows))

    def answers(self, outputs: Sequence[np.ndarray], rows: Sequence[RecommendRequest]) -> tuple[list[dict[str, Any]],
                                                                                             np.ndarray]:
        """Each request's `k` best items (those left out as seen dropped) and, per answer, the mean popularity
        percentile of the items returned (0 for an empty list)."""
        items, scores, known, percentile = outputs
        answered, popularity = [], np.zeros(len(rows))
        for i, row in enumerate(rows):
            kept = scores[i, :row.k] >= 0  # -1 marks an item excluded as seen
            answered.append({"items": [{"item_id": item, "score": score} for item, score in zip(
                items[i, :row.k][kept].tolist(), scores[i, :row.k][kept].tolist(), strict=True)],
                             "fallback": not bool(known[i])})
            popularity[i] = float(percentile[i, :row.k][kept].mean()) if kept.any() else 0.0
        return answered, popularity

    def answered_items(self, answer: Mapping[str, Any]) -> list[int]:
        """The item ids one answer listed, best first (what a click is a hit on)."""
        return [int(item["item_id"]) for item in answer["items"]]
