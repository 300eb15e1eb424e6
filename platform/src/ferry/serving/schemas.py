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


class StateStoreArgs(BaseModel):
    """Where the router finds the online feature state (Redis). The password is never here (these args are
    in Git on a cluster): it is read from a file (`ferry up`: .ferry/redis/password) or an environment
    variable (a cluster: from the Secret `ferry-redis`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str
    port: int = Field(gt=0, lt=65536)
    password_file: str | None = None
    password_env: str | None = None
    namespace: str = Field(min_length=1, description="Key prefix: one model's state apart from another's.")
    delay_days: int = Field(7, ge=1, description="The label delay of the model's data (data.split.delay_days).")
    timeout_s: float = Field(1.0, gt=0, le=30, description="Socket timeout of one round trip.")


class PredictionLogArgs(BaseModel):
    """Where the router logs what it scored and the labels it was sent (ferry.serving.prediction_log): a URI
    pyarrow opens (`file://` under .ferry locally, `s3://` beside MLflow's artifacts on a cluster)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: str = Field(min_length=1)
    flush_interval_s: float = Field(1.0, gt=0, le=60, description=(
        "How often queued rows are written: a killed replica loses at most this much of its traffic."))


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
    quality_metrics: list[str] = Field(default_factory=list, description=(
        "Workload metrics measured on labelled traffic from the prediction log (the spec's evaluation gates)."))
    quality_window_s: float = Field(86_400.0, gt=0, le=30 * 86400, description=(
        "Serving-time window the quality metrics are measured over."))
    state_store: StateStoreArgs | None = Field(None, description=(
        "The online feature state of a workload that takes raw requests; None: its raw routes answer 503."))
    prediction_log: PredictionLogArgs | None = Field(None, description=(
        "Log every scored raw request and every label (a workload that takes raw requests); None: no log."))
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


class LabelsReport(BaseModel):
    stored: int = Field(description="New labels: each counts in its terminal's risk from now on.")
    repeated: int = Field(description="Labels already stored with the same value: counted once.")
    corrected: int = Field(description="Labels that replaced a different earlier one.")
    unmatched: list[str] = Field(description="Ids of no scored transaction (yet): kept, applied if it comes.")


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
    shadow_sample: float = Field(0.0, description=(
        "Share of answered rows the model that did not answer also scores (ferry.serving.shadow); 0: off."))
    registry_reachable: bool
    last_error: str | None = None
    seconds_since_poll: float | None = None
    log_dropped_rows: int | None = Field(None, description=(
        "Rows the prediction log could not keep (its store failed or its queue was full); None: no log."))


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of ferry's own (non-validation) errors; validation errors keep FastAPI's shape."""
    return {"detail": message, **extra}
