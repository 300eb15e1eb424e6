"""The fraud MLP's hyperparameters: `spec.training.params`, and what `spec.training.tune.space` searches.

Light on purpose (pydantic only) so `ferry validate` can read it without loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class TrainingParams(BaseModel):
    """Strict in the spec (`hidden: "64"` or `true` is an error, not a guess); see `from_values` for run time."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    hidden: int = Field(64, ge=1, le=4096, description="Units in each of the two hidden layers.")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after each hidden layer.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="Adam weight decay (L2 penalty).")

    @classmethod
    def from_values(cls, values: Mapping[str, object] | TrainingParams) -> TrainingParams:
        """Params as they arrive at run time: the spec's, overlaid with what Tune sampled or MLflow
        logged. Lax, because a sample can be a numpy scalar; the spec itself was checked strictly."""
        if isinstance(values, TrainingParams):
            return values
        return cls.model_validate(dict(values), strict=False)
