"""The Workload protocol (DESIGN §4): what a workload gives the platform.

The platform finds workloads by entry point (group `ferry.workloads`) and talks to them only
through this protocol, so it never imports one by name. `facts` declares the workload's metrics and
the pydantic models of its `data.params` and `training.params` (and which of those the tune space may
search): `ferry validate` checks specs against them and the JSON Schema embeds them. Params cross
process boundaries (Ray configs, MLflow, checkpoints) as plain mappings; the workload reads them
through its models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from ferry.spec.checks import WorkloadFacts
from ferry.spec.models import DataSpec

ENTRY_POINT_GROUP = "ferry.workloads"
Report = Callable[[Mapping[str, float]], None]


@runtime_checkable
class Workload(Protocol):
    name: str
    facts: WorkloadFacts
    request_model: type[BaseModel]
    response_model: type[BaseModel]

    def load_data(self, data: DataSpec, data_root: Path) -> Any:
        """The raw dataset (a pandas DataFrame) for a data spec; `data.params` read as `facts.data_params`."""

    def featurize(self, frame: Any, data: DataSpec) -> Any:
        """The frame with the model's features added (what the data step stores)."""

    def dataset_digest(self, frame: Any) -> str:
        """A content digest: the same rows give the same digest."""

    def prepare(self, frame: Any, data: DataSpec) -> dict[str, Any]:
        """Features and the split: arrays `x_train`, `y_train`, `x_valid`, `y_valid`, `x_test`, `y_test`
        plus whatever evaluate needs (`test_frame`)."""

    def train_loop_per_worker(self, config: dict[str, Any]) -> None:
        """The per-worker Ray Train loop; `config["params"]` holds the training params (read as
        `facts.training_params`). Reports metrics and a checkpoint every epoch."""

    def tune_trainable(self, config: dict[str, Any], data: dict[str, Any], fixed_params: dict[str, Any]) -> None:
        """One Tune trial: `config` holds the sampled hyperparameters (keys of `facts.tunable_params`), which
        overlay `fixed_params`; `data` the arrays. Reports the tune metric every epoch."""

    def load_checkpoint(self, folder: Path) -> Any:
        """The trained model from a checkpoint folder, loaded without executing pickles."""

    def example_request(self) -> dict[str, Any]:
        """One valid request body for the serving API (smoke tests, `ferry up`'s served prediction)."""

    def input_example(self, prepared: Mapping[str, Any]) -> Any:
        """A few feature rows: the registered model's input example and signature."""

    def evaluate(self, prepared: Mapping[str, Any], scores: Any) -> dict[str, float]:
        """The workload's metrics (named in facts.metrics) for scores on the test set."""

    def predict_batch(self, model: Any, features: Any) -> Any:
        """Scores for a batch of feature rows."""
