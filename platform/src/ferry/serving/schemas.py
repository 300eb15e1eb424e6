"""The serving app's own pydantic models: builder arguments and responses.

Request bodies are the workload's `request_model`; these wrap what every workload answers with.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ferry.serving.routing import Variant
from ferry.spec.models import ServingSpec

DEFAULT_POLL_INTERVAL_S = 5.0


class AppArgs(BaseModel):
    """What `build_app` takes: the `args` of a Serve application (serveConfigV2, or `deploy_local`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(description="Registered model name.")
    workload: str = Field(description="Workload entry point name (group ferry.workloads).")
    tracking_uri: str = Field(description="MLflow tracking/registry URI the router polls.")
    serving: ServingSpec
    poll_interval_s: float = Field(DEFAULT_POLL_INTERVAL_S, gt=0, le=3600,
                                   description="How often the router re-reads aliases and weight.")
    registry_timeout_s: float = Field(5.0, gt=0, le=120,
                                      description="HTTP timeout of one registry call from the router.")
    drift_window_s: float = Field(3600.0, gt=0, le=30 * 86400, description=(
        "Sliding window of live traffic the drift PSI is computed over (monitoring.drift_window)."))
    allow_fault_injection: bool = Field(False, description=(
        "Honour the ferry.fault.* model-version tags (ferry.serving.faults). For tests and reliability runs "
        "only: the renderer never sets it."))

    def fingerprint(self) -> str:
        """Identifies a deployed configuration: equal fingerprints mean redeploying changes nothing."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class Prediction(BaseModel):
    score: float = Field(description="Model score in [0, 1].")
    decision: bool = Field(description="score ≥ the workload's threshold.")
    model: str
    version: str = Field(description="Registered model version that produced the score.")
    variant: Variant


class BatchPredictions(BaseModel):
    predictions: list[Prediction]


class Health(BaseModel):
    status: Literal["alive", "ready", "not ready"]
    detail: str = ""


class Info(BaseModel):
    """What the router currently serves; `deploy_local` compares `fingerprint` to skip a redeploy."""

    model: str
    fingerprint: str
    champion: str | None
    challenger: str | None
    weight: int
    registry_reachable: bool
    last_error: str | None = None
    seconds_since_poll: float | None = None


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of ferry's own (non-validation) errors; validation errors keep FastAPI's shape."""
    return {"detail": message, **extra}
