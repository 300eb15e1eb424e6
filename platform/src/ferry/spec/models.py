"""Pydantic models of `apiVersion: ferry.dev/v1, kind: Model`: the file a pull request changes.

Every model forbids unknown keys so a typo is an error with a did-you-mean hint, never silently
ignored. Cross-field rules that need the whole spec (or several specs) live in `checks.py`.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ferry.contract.durations import parse_duration_s

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
ROUTE = re.compile(r"^/[a-z0-9][-a-z0-9/_]*$")
# Leaves room for the `-<10-char hash>` and `-pipeline` suffixes within Kubernetes' 63-char labels.
# tests/golden/test_cluster_contract.py checks every name derived from it against its kind's limit at this length.
MAX_NAME_LENGTH = 40

ScalarParam = str | int | float | bool


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Metadata(Strict):
    name: str = Field(description="DNS-1123 label; names the Workflow, RayService and registered model.")
    owner: str = Field(min_length=1, description="Team that owns the model.")
    description: str = ""

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not DNS_LABEL.match(value) or len(value) > MAX_NAME_LENGTH:
            raise ValueError(
                f"must be a lowercase DNS label (a-z, 0-9, '-') of at most {MAX_NAME_LENGTH} characters,"
                f" starting with a letter, got {value!r}"
            )
        return value


class TimeSplit(Strict):
    """Train/delay/test split in days, as fraud labels arrive late (DESIGN: the handbook's protocol)."""

    train_start: date | None = Field(None, description=(
        "First training day. Required, except with `source: log`: a log window moves, so its split starts on "
        "the window's first day."))
    train_days: int = Field(7, ge=1, le=366)
    delay_days: int = Field(7, ge=0, le=90)
    test_days: int = Field(7, ge=1, le=366)


SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # file:, s3://, https://, and Windows drives (C:)


def _unsafe_path(value: str) -> str:
    """Why a data path could leave the data root or mean something else than a local file ('' when safe).

    Spec paths are never URL-decoded, so '%2e%2e' is harmless as such; it is refused anyway because
    it only ever appears when someone tries it, and a clear error beats a file-not-found later.
    Symlinks that leave the root can only be seen on disk: the workload resolves the path at run time.
    """
    checks = [
        (not value.strip(), "it is empty"),
        (any(ord(ch) < 32 or ord(ch) == 127 for ch in value), "control characters are not allowed"),
        (bool(SCHEME.match(value)), "a URL scheme or drive is not allowed"),
        (value.startswith(("/", "~")), "absolute and '~' paths are not allowed"),
        ("\\" in value, "use '/' as the separator; '\\' is not allowed"),
        ("%" in value, "percent-encoded characters are not allowed"),
        (".." in value.split("/"), "'..' is not allowed"),
    ]
    return next((reason for failed, reason in checks if failed), "")


class LogWindow(Strict):
    """Which served traffic `source: log` trains on: the newest `days` of event time whose labels are in.

    The window ends `label_delay_days` before the newest logged event time (a payment's label can take that long
    to arrive), or where the labels that came back end if earlier, at midnight, so every trigger on one day
    reads the same window (and the same snapshot)."""

    days: int = Field(28, ge=1, le=366, description="Days of event time in the window.")
    label_delay_days: int = Field(7, ge=0, le=90, description=(
        "The newest days left out: labels of payments younger than this may still arrive."))
    min_labelled_rows: int = Field(1000, ge=1, description=(
        "Fewer labelled rows in the window fail the data step (nothing is trained on too little data)."))


class DataSpec(Strict):
    source: Literal["simulator", "parquet", "log", "dataset"] = Field(description=(
        "`simulator` generates data from `params`; `parquet` reads `path`; `log` reads what serving logged "
        "for this model, joined with the labels that came back, over `window`; `dataset` reads the public "
        "dataset the workload ships with (the recommender's MovieLens 100K), shaped by `params`."))
    path: str | None = Field(None, description="Relative path of a parquet file inside the data root.")
    params: dict[str, ScalarParam] = Field(default_factory=dict, description=(
        "Workload-specific knobs, typed by the workload's data params model (`ferry validate` checks them; "
        "model.schema.json has each installed workload's fields)."))
    window: LogWindow | None = Field(None, description="Only with `source: log` (required there).")
    split: TimeSplit | None = None

    @field_validator("path")
    @classmethod
    def _safe_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        problem = _unsafe_path(value)
        if problem:
            raise ValueError(f"must be a relative path inside the data root ({problem}), got {value!r};"
                             " e.g. 'transactions/2018.parquet'")
        return value

    @model_validator(mode="after")
    def _path_matches_source(self) -> DataSpec:
        if self.source == "parquet" and not self.path:
            raise ValueError("source 'parquet' needs a 'path'")
        if self.source != "parquet" and self.path:
            raise ValueError(f"source {self.source!r} takes no 'path'; remove it or use source: parquet")
        if (self.source == "log") != (self.window is not None):
            raise ValueError("source 'log' needs a 'window' (e.g. window: {days: 28, label_delay_days: 7})"
                             if self.source == "log" else f"source {self.source!r} takes no 'window'; remove it")
        return self._split_start_matches_source()

    def _split_start_matches_source(self) -> DataSpec:
        if self.split is None:
            return self
        if self.source == "log" and self.split.train_start is not None:
            raise ValueError("a log window moves: its split starts on the window's first day; remove "
                             "split.train_start")
        if self.source != "log" and self.split.train_start is None:
            raise ValueError(f"source {self.source!r} needs split.train_start (the first training day), "
                             "e.g. train_start: 2018-07-25")
        return self


class Resources(Strict):
    workers: int = Field(1, ge=1, le=256, description="Ray Train workers.")
    cpus_per_worker: float = Field(1.0, gt=0, le=256)
    gpus_per_worker: float = Field(0.0, ge=0, le=16, description="Fractions share a GPU between trials.")
    memory_per_worker: str = Field("2Gi", pattern=r"^\d+(Mi|Gi)$")


class SearchDomain(Strict):
    """Exactly one distribution per hyperparameter, written as `{loguniform: [1e-4, 1e-1]}`."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[ScalarParam] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchDomain:
        given = [name for name in DISTRIBUTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DISTRIBUTIONS)}; got {given or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in DISTRIBUTIONS if getattr(self, name) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)


DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


class TuneSpec(Strict):
    num_samples: int = Field(8, ge=1, le=10_000)
    max_concurrent: int = Field(2, ge=1, le=1_000)
    scheduler: Literal["asha", "fifo"] = "asha"
    search: Literal["optuna", "random"] = "optuna"
    metric: str = "average_precision"
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1, description="Epochs before ASHA may stop a trial.")
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    space: dict[str, SearchDomain] = Field(min_length=1, description=(
        "Training params to search, by name; the workload says which are tunable and which values are valid."))


class TrainingSpec(Strict):
    resources: Resources = Resources()
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(1024, ge=1, le=1_048_576)
    params: dict[str, ScalarParam] = Field(default_factory=dict, description=(
        "Fixed hyperparameters, typed by the workload's training params model; `tune.space` overlays them."))
    tune: TuneSpec | None = None
    max_failures: int = Field(2, ge=0, le=100, description="Worker failures Ray Train recovers from.")


class Gate(Strict):
    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs 'min' or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class BeatChampion(Strict):
    metric: str
    min_delta: float = 0.0


class EvaluationSpec(Strict):
    gates: list[Gate] = Field(default_factory=list)
    beat_champion: BeatChampion | None = None

    def judged(self) -> tuple[str, ...]:
        """The metrics the gates and the champion comparison judge, each once, in the spec's order."""
        metrics = [gate.metric for gate in self.gates] + ([self.beat_champion.metric] if self.beat_champion else [])
        return tuple(dict.fromkeys(metrics))


class ReplicaSpec(Strict):
    min: int = Field(1, ge=0, le=1_000)
    max: int = Field(1, ge=1, le=1_000)
    target_ongoing_requests: float = Field(16, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaSpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class Batching(Strict):
    max_batch_size: int = Field(32, ge=1, le=10_000)
    wait_ms: float = Field(5, ge=0, le=10_000)


class RequestLimits(Strict):
    max_body_bytes: int = Field(1_048_576, ge=1_024, le=104_857_600)
    max_batch_rows: int = Field(1_024, ge=1, le=100_000)
    timeout_s: float = Field(10, gt=0, le=600)


class ServingSpec(Strict):
    route: str = Field(description="HTTP route prefix, e.g. /fraud-detector.")
    replicas: ReplicaSpec = ReplicaSpec()
    max_ongoing_requests: int = Field(64, ge=1, le=10_000)
    batching: Batching = Batching()
    limits: RequestLimits = RequestLimits()
    cpus_per_replica: float = Field(1.0, gt=0)
    ingress: Literal["haproxy", "python"] = Field("haproxy", description=(
        "Cluster ingress of the RayService. 'haproxy': Ray Serve's high-throughput mode (HAProxy in each "
        "pod forwards straight to the router replicas' own HTTP servers, no Python proxy hop). 'python': "
        "Ray's Python Serve proxy. Locally one Ray head serves every model with one ingress: HAProxy by default, "
        "or the Python proxy with FERRY_LOCAL_INGRESS=python; both keep every listener on 127.0.0.1."))

    @field_validator("route")
    @classmethod
    def _route(cls, value: str) -> str:
        if not ROUTE.match(value) or value.endswith("/"):
            raise ValueError(f"must look like '/my-model' (lowercase, no trailing '/'), got {value!r}")
        return value


class Analysis(Strict):
    max_error_rate_delta: float = Field(0.01, ge=0, le=1)
    significance: float = Field(0.05, gt=0, lt=1, description="Test level for the error-rate and latency comparisons.")
    max_p99_latency_ms: float = Field(100, gt=0)
    max_score_psi: float = Field(0.2, gt=0)
    min_requests: int = Field(200, ge=1)
    failure_limit: int = Field(2, ge=1, le=100)


def _duration(value: str) -> str:
    if not DURATION.match(value):
        raise ValueError(f"must be a duration like '30s', '5m' or '1h', got {value!r}")
    return value


Duration = Annotated[str, AfterValidator(_duration), Field(json_schema_extra={"pattern": DURATION.pattern})]


def duration_s(value: str) -> float:
    """A validated Duration ('30s', '5m', '1h') in seconds."""
    return parse_duration_s(_duration(value))


class ShadowSpec(Strict):
    """A first stage at weight 0: the challenger scores mirrored requests off the response path."""

    duration: Duration = Field("10m", description="Least time in shadow before the first weight step.")
    sample: float = Field(1.0, gt=0, le=1, description=(
        "Share of requests the model that did not answer also scores (in shadow and at every later step), "
        "so labelled transactions carry both models' scores."))


class OutcomeAnalysis(Strict):
    """Judge the challenger on delayed labels: paired on the transactions both models scored."""

    metrics: list[str] = Field(default_factory=lambda: ["average_precision"], min_length=1, description=(
        "Workload metrics compared (challenger - champion), each with a paired bootstrap interval."))
    margin: float = Field(0.05, ge=0, le=1, description=(
        "How much worse than the champion (absolute, e.g. 0.05 average precision) still passes."))
    confidence: float = Field(0.95, gt=0.5, lt=1, description="One-sided confidence of each interval bound.")
    min_labelled: int = Field(500, ge=10, description="Hold until this many paired, labelled transactions.")
    min_positives: int = Field(20, ge=1, description="... of which at least this many are positive.")
    resamples: int = Field(300, ge=50, le=5000, description="Bootstrap resamples per check.")


class RolloutSpec(Strict):
    steps: list[int] = Field(default_factory=lambda: [10, 50, 100], min_length=1)
    interval: Duration = "30s"
    hold_timeout: Duration = Field("10m", description="Roll back when evidence is missing this long.")
    analysis: Analysis = Analysis()
    shadow: ShadowSpec | None = Field(None, description="Start with a shadow stage (needs the prediction log).")
    outcomes: OutcomeAnalysis | None = Field(None, description=(
        "Also judge on labelled outcomes: promote only when not worse beyond the margin (needs shadow)."))


class Oncall(Strict):
    team: str = Field(pattern=r"^[a-z][-a-z0-9]*$")
    severity: Literal["page", "ticket", "info"] = "page"


class SLO(Strict):
    availability: float = Field(0.999, gt=0, lt=1, description="Share of requests that must not fail.")
    latency_ms: float = Field(100, gt=0, description="Latency threshold for the latency SLO.")
    latency_target: float = Field(0.99, gt=0, lt=1, description="Share of requests faster than latency_ms.")


class MonitoringSpec(Strict):
    drift_psi_alert: float = Field(0.25, gt=0)
    drift_window: Duration = "1h"
    slo: SLO = SLO()
    oncall: Oncall


class ModelBody(Strict):
    workload: str = Field(pattern=r"^[a-z_][a-z0-9_]*$", description="Entry point in group ferry.workloads.")
    data: DataSpec
    training: TrainingSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    serving: ServingSpec
    rollout: RolloutSpec = RolloutSpec()
    monitoring: MonitoringSpec
    schedule: str | None = Field(None, description="Cron expression for scheduled retraining.")


class ModelSpec(Strict):
    """The root object of a file in gitops/models/."""

    apiVersion: Literal["ferry.dev/v1"]
    kind: Literal["Model"]
    metadata: Metadata
    spec: ModelBody

    @property
    def name(self) -> str:
        return self.metadata.name


def training_view(model: ModelSpec) -> dict[str, Any]:
    """The fields that change what is trained; the spec hash is computed over exactly these."""
    body = model.spec
    # A field added to the data section later enters only when set: a platform upgrade must not change the hash
    # of a spec that does not use it (a new hash retrains the model).
    added_later = {"window"} if body.data.window is None else set()
    return {
        "workload": body.workload,
        "data": body.data.model_dump(mode="json", exclude=added_later),
        "training": body.training.model_dump(mode="json"),
    }
