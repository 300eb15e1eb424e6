"""One typed settings object, built once at the edge (CLI or step entrypoint) from FERRY_* variables.

Everything local mode binds to loopback; ports are configurable so two checkouts can coexist.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ferry.contract.errors import FerryError
from ferry.contract.metrics import ROLLOUT_METRICS_PORT
from ferry.contract.names import LOG_LOCAL_DIR

LOOPBACK = "127.0.0.1"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FERRY_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=Path.cwd, description="The checkout: gitops/ lives here.")
    state_dir_name: str = ".ferry"
    host: str = LOOPBACK
    mlflow_port: int = 5000
    ray_port: int = 6379
    ray_dashboard_port: int = 8265
    ray_metrics_port: int = 8080
    ray_client_port: int = 10001
    serve_port: int = 8000
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    receiver_port: int = 9095
    # 6379 is Redis' default, and Ray's GCS port above: the feature state store takes another.
    redis_port: int = 6390
    rollout_metrics_port: int = ROLLOUT_METRICS_PORT
    rollout_metrics_host_override: str | None = Field(
        None, description="Address the rollout step serves its metrics on; default: `host`. On a cluster the pod IP.")
    rollout_metrics_linger_s: float = Field(
        0.0, ge=0, description="How long the rollout step keeps serving its metrics after its decision, so "
        "Prometheus scrapes the last one before the process (on a cluster: the pod) ends.")
    prometheus_url_override: str | None = Field(None, description="Prometheus the rollout controller queries.")
    ray_cpus: int | None = Field(None, description="CPUs the local Ray head offers; default: all.")
    local_ingress: Literal["python", "haproxy"] = Field(
        "haproxy", description="The local head's Serve ingress: HAProxy with direct ingress to the replicas (Ray's "
        "high-throughput mode, what the rendered RayService runs), every listener on loopback; or Ray's Python "
        "proxy. Read when the Ray head starts.")
    warm_steps: bool = Field(
        True, description="Start the local runner's container steps forked from a process that has imported what "
        "they import, instead of each as a new interpreter (the same command, environment and exit code).")
    mlflow_uri_override: str | None = Field(
        None, alias="MLFLOW_TRACKING_URI", description="An MLflow tracking server to use instead of the local one "
        "(a team's server): `ferry up` then waits for it to answer and starts none (`ferry status`: external).")
    outputs_dir: Path | None = None
    data_root: Path | None = None
    ready_timeout_s: float = 120.0
    prediction_log_uri_override: str | None = Field(
        None, description="The prediction log a `source: log` data step reads; default: the local one.")
    image: str | None = Field(None, description="The container image this process runs in (FERRY_IMAGE, set by "
                              "the rendered Workflow's steps); none when it runs outside a container.")

    @property
    def state_dir(self) -> Path:
        return self.home / self.state_dir_name

    def short_temp_dir(self, kind: str) -> Path:
        """`<tmp>/ferry-<kind>-<digest of the state dir>`: one per checkout, and short, for folders that hold unix
        sockets (Ray's, HAProxy's), whose paths are capped near 100 bytes."""
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"ferry-{kind}-{digest}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def redis_password_file(self) -> Path:
        """The local feature state store's password (0600), written by `ferry up`, read by serving."""
        return self.state_dir / "redis" / "password"

    @property
    def prediction_log_uri(self) -> str:
        """Where serving logs scored raw requests and labels (ferry.serving.prediction_log): under the local state
        folder, or what FERRY_PREDICTION_LOG_URI_OVERRIDE says (a cluster's data step: the object store)."""
        return self.prediction_log_uri_override or (self.state_dir / LOG_LOCAL_DIR).resolve().as_uri()

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_uri_override or self.local_mlflow_uri

    @property
    def local_mlflow_uri(self) -> str:
        """Where the MLflow server `ferry up` starts answers."""
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def mlflow_is_external(self) -> bool:
        """MLFLOW_TRACKING_URI names a tracking server other than the local one: `ferry up` uses it and starts
        none (ferry's own children get MLFLOW_TRACKING_URI set to the local server's address, which is not this)."""
        override = self.mlflow_uri_override
        return override is not None and override.rstrip("/") != self.local_mlflow_uri

    @property
    def prometheus_url(self) -> str:
        return self.prometheus_url_override or f"http://{self.host}:{self.prometheus_port}"

    @property
    def rollout_metrics_host(self) -> str:
        return self.rollout_metrics_host_override or self.host

    @property
    def ray_address(self) -> str:
        return f"{self.host}:{self.ray_port}"

    @property
    def ray_dashboard_url(self) -> str:
        return f"http://{self.host}:{self.ray_dashboard_port}"

    @property
    def data_dir(self) -> Path:
        return self.data_root or self.home / "data"


class SettingsInvalid(FerryError):
    """A FERRY_* variable holds a value its setting cannot take."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise SettingsInvalid(f"{problems}. Fix or unset the variable") from None


def _problem(error: Any) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    info = Settings.model_fields.get(field)
    variable = info.alias if info and info.alias else f"FERRY_{field.upper()}"
    return f"{variable}={error.get('input')!r}: {error['msg']}"
