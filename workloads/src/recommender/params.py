"""The recommender's hyperparameters: `spec.training.params`, and what `spec.training.tune.space` searches.

Light on purpose (pydantic only) so `ferry validate` can read it without loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class TrainingParams(BaseModel):
    """Strict in the spec; `from_values` is the lax reading of what Tune sampled or MLflow logged."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    dim: int = Field(256, ge=1, le=4096, description="Size of a user's encoded vector.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Share of a user's rated items hidden from the encoder "
                                                        "in training (the denoising).")
    lr: float = Field(2e-3, gt=0, le=1, description="Adam learning rate.")
    weight_decay: float = Field(1e-5, ge=0, le=1, description="Adam weight decay (L2 penalty).")

    @classmethod
    def from_values(cls, values: Mapping[str, object] | TrainingParams) -> TrainingParams:
        if isinstance(values, TrainingParams):
            return values
        return cls.model_validate(dict(values), strict=False)


class DataParams(BaseModel):
    """`spec.data.params` of a `movielens` source: how each user's history is cut (recommender.split)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    valid_share: float = Field(0.1, gt=0, lt=0.5, description="Share of each user's ratings, before the test "
                                                               "period, that validation (tuning) scores on.")
    test_share: float = Field(0.2, gt=0, lt=0.5, description="Share of each user's newest ratings held out "
                                                             "for test.")
    max_users: int | None = Field(None, ge=10, description="Keep only this many users (the lowest ids): the "
                                                           "small sample of a plan's metric preview.")
    holdout_share: float = Field(0.0, ge=0, lt=0.5, description=(
        "Share of each user's newest ratings kept out of everything the model and its scorer see: the future "
        "that `ferry replay` sends as clicks on the served recommendations (0: none kept out)."))
