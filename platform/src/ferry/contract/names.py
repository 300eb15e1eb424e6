"""The one place that decides names, labels, annotations, MLflow tags, steps, triggers and exit codes.

Everything that must agree across the cluster, the local runner and the steps (a Workflow's name,
the RayJob it creates, the registered model, the tags steps search by, the exit code that means "retry
me", why a run exists) is spelled here and nowhere else; metric names live in `ferry.contract.metrics`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from ferry.contract.errors import EXIT_FAILED as EXIT_FAILED  # re-exported: one list of exit codes
from ferry.contract.errors import EXIT_TRANSIENT as EXIT_TRANSIENT

PART_OF = "ferry"
DOMAIN = "ferry.dev"

LABEL_MODEL = f"{DOMAIN}/model"
LABEL_SPEC_HASH = f"{DOMAIN}/spec-hash"
LABEL_STEP = f"{DOMAIN}/step"
LABEL_WORKFLOW = f"{DOMAIN}/workflow"  # on a RayJob: the run that created it (its name cannot carry it)
LABEL_TRIGGER = f"{DOMAIN}/trigger"  # why a pipeline run exists (TRIGGERS)
ANNOTATION_REASON = f"{DOMAIN}/reason"  # on a retraining run: what asked for it, in words
ANNOTATION_SUBMITTER = f"{DOMAIN}/submitted-by"  # on a run `ferry submit` created

# MLflow tags through which steps find each other's results (no Argo artifact repository needed).
TAG_WORKFLOW = "ferry.workflow"
TAG_STEP = "ferry.step"
TAG_SPEC_HASH = "ferry.spec_hash"
TAG_MODEL = "ferry.model"
TAG_GIT_COMMIT = "ferry.git_commit"
TAG_DATASET_DIGEST = "ferry.dataset_digest"
# On a data step's run: the run whose artifact holds the Parquet snapshot of that digest (its own, or the first
# run that wrote it: an unchanged dataset is stored once), and for `source: log` the event-time window and counts.
TAG_DATASET_SNAPSHOT_RUN = "ferry.dataset.snapshot_run"
TAG_DATASET_WINDOW = "ferry.dataset.window"  # ISO 8601 interval of days, end exclusive: 2018-08-01/2018-08-29
TAG_DATASET_LOGGED_ROWS = "ferry.dataset.logged_rows"
TAG_DATASET_LABELLED_ROWS = "ferry.dataset.labelled_rows"
# On a data step's run: the workflow that trains this spec hash on this digest (the run's identity). Its own
# workflow, or an earlier one that already did: then tune and train are skipped and evaluate passes nothing on.
TAG_DATASET_TRAINED_BY = "ferry.dataset.trained_by"
TAG_ROLLOUT_WEIGHT = "ferry.rollout.weight"
# On the challenger: the share (0-1) of requests the model that did not answer also scores, off the response path.
TAG_ROLLOUT_SHADOW_SAMPLE = "ferry.rollout.shadow_sample"
TAG_ROLLOUT_STATE = "ferry.rollout.state"
TAG_ROLLOUT_REASON = "ferry.rollout.reason"
# Set at register: when the version's training finished (RFC 3339, UTC) and where its drift reference is.
TAG_TRAINED_AT = "ferry.trained_at"
TAG_REFERENCE = "ferry.reference"
# On the evaluate step's run: its verdict, which register reads, and the champion it was compared with.
TAG_EVALUATE_PASSED = "ferry.evaluate.passed"
TAG_EVALUATE_REASON = "ferry.evaluate.reason"
TAG_EVALUATE_CHAMPION_VERSION = "ferry.evaluate.champion_version"
TAG_TRAIN_DEVICE = "ferry.train.device"  # on the train step's run: the device the workload trained on
# Set at register, what `ferry lineage` prints besides the tags above: the champion the version was evaluated
# against (its parent), the image the step ran in, and the data step's run, source and rows.
TAG_METRIC_PREFIX = "metric."  # the evaluation's metrics on a version: metric.average_precision, ...
TAG_LINEAGE_PARENT = "ferry.lineage.parent"
TAG_LINEAGE_IMAGE = "ferry.lineage.image"
TAG_LINEAGE_DATA_RUN = "ferry.lineage.data_run"
TAG_LINEAGE_DATA_SOURCE = "ferry.lineage.data_source"
TAG_LINEAGE_DATA_ROWS = "ferry.lineage.data_rows"
TAG_LINEAGE_DATA_WINDOW = "ferry.lineage.data_window"
# The container image a Workflow step runs in, set by the rendered template (ferry.settings reads it).
IMAGE_ENV = "FERRY_IMAGE"
# The console script (pyproject.toml) a cluster's Ray Serve runs as HAProxy (ferry.serving.haproxy_launch).
HAPROXY_LAUNCHER = "ferry-haproxy"
# The folder a step writes its output parameters to (one file each; the runner or Argo reads them back).
OUTPUTS_DIR_ENV = "FERRY_OUTPUTS_DIR"
# One JSON record per canary check on the challenger version: ferry.rollout.check.001, .002, ...
TAG_ROLLOUT_CHECK_PREFIX = "ferry.rollout.check."
# Faults a version's router injects (tests, benchmarks and drills only): share of failed rows, added latency.
TAG_FAULT_ERROR_RATE = "ferry.fault.error_rate"
TAG_FAULT_LATENCY_MS = "ferry.fault.latency_ms"

# The values of TAG_ROLLOUT_STATE, in the order a version goes through them.
STATE_REGISTERED = "registered"
STATE_CANARY = "canary"
STATE_PROMOTED = "promoted"
STATE_ROLLED_BACK = "rolled-back"
STATE_RETIRED = "retired"  # a champion a promotion replaced
ROLLOUT_STATES = (STATE_REGISTERED, STATE_CANARY, STATE_PROMOTED, STATE_ROLLED_BACK, STATE_RETIRED)
FINAL_ROLLOUT_STATES = (STATE_PROMOTED, STATE_ROLLED_BACK, STATE_RETIRED)  # a rerun of the rollout changes nothing

# Every alert's runbook_url is this base plus docs/runbooks/<alert in kebab case>.md.
RUNBOOK_URL_BASE = "https://github.com/ferry-ml/ferry/blob/main/docs/runbooks/"
# The label kube-prometheus-stack's Grafana sidecar watches ConfigMaps for (gitops/platform/apps).
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"
GRAFANA_UID_MAX = 40
# KubeRay refuses a RayJob name over 47 characters (it appends 6 to name the RayCluster, whose Services must fit
# 63); Argo's generateName appends 5 random characters.
RAYJOB_NAME_MAX = 47
GENERATE_NAME_RANDOM = 5

# ServiceAccounts in the `ferry` namespace (platform/deploy/serviceaccounts.yaml creates them).
SERVICE_ACCOUNT_WORKFLOW = "ferry-workflow"  # Argo step pods: the executor and the RayJob resource steps
# The tune/train RayJobs' pods (head, workers, submitter): they call no Kubernetes API, so no rights, no token.
SERVICE_ACCOUNT_RAYJOB = "ferry-rayjob"
# RayService pods. Only the head's autoscaler sidecar gets a token: KubeRay binds its autoscaler Role to it.
SERVICE_ACCOUNT_SERVING = "ferry-serving"
# The PodMonitor that scrapes every rollout step's own metrics (its pods carry LABEL_STEP=STEP_ROLLOUT).
ROLLOUT_POD_MONITOR = "ferry-rollout"

ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"

# The pipeline's steps, in DAG order: `ferry step <name>`, the Workflow's tasks, the MLflow runs' TAG_STEP.
STEP_DATA = "data"
STEP_TUNE = "tune"
STEP_TRAIN = "train"
STEP_EVALUATE = "evaluate"
STEP_REGISTER = "register"
STEP_ROLLOUT = "rollout"
STEPS = (STEP_DATA, STEP_TUNE, STEP_TRAIN, STEP_EVALUATE, STEP_REGISTER, STEP_ROLLOUT)
RAY_STEPS = (STEP_TUNE, STEP_TRAIN)  # KubeRay RayJobs; the rest are container steps
CONTAINER_STEPS = tuple(step for step in STEPS if step not in RAY_STEPS)
GATED_STEPS = (STEP_REGISTER, STEP_ROLLOUT)  # run only when evaluate passed
TRAINING_STEPS = RAY_STEPS  # run only when the data step found the dataset fresh for this spec hash

# What a step writes to $FERRY_OUTPUTS_DIR/<name>: the Workflow's output parameters, shown in the Argo UI.
OUTPUT_MLFLOW_RUN = "mlflow-run"
OUTPUT_DATASET_DIGEST = "dataset-digest"
OUTPUT_ROWS = "rows"
OUTPUT_FRESH = "fresh"  # "true" | "false": no earlier run trained this spec hash on this dataset (tune/train `when`)
OUTPUT_PASSED = "passed"  # "true" | "false": the gated steps' `when`
OUTPUT_REASON = "reason"
OUTPUT_MODEL_VERSION = "model-version"
OUTPUT_MODEL_URI = "model-uri"
OUTPUT_DECISION = "decision"  # a final rollout state, or DECISION_NOTHING_REGISTERED
DECISION_NOTHING_REGISTERED = "nothing-registered"
STEP_OUTPUTS: dict[str, tuple[str, ...]] = {
    STEP_DATA: (OUTPUT_MLFLOW_RUN, OUTPUT_DATASET_DIGEST, OUTPUT_ROWS, OUTPUT_FRESH),
    STEP_EVALUATE: (OUTPUT_MLFLOW_RUN, OUTPUT_PASSED, OUTPUT_REASON),  # + the spec's judged metrics: step_outputs
    STEP_REGISTER: (OUTPUT_MODEL_VERSION, OUTPUT_MODEL_URI),
    STEP_ROLLOUT: (OUTPUT_DECISION, OUTPUT_REASON),
}



def metric_output(metric: str) -> str:
    """The evaluate step's output parameter showing a workload metric (Argo's UI lists outputs by these names)."""
    return metric.replace("_", "-")


def step_outputs(step: str, judged_metrics: Sequence[str] = ()) -> tuple[str, ...]:
    """A step's output parameters; evaluate's include the metrics the spec judges (`EvaluationSpec.judged`)."""
    extra = tuple(metric_output(metric) for metric in judged_metrics) if step == STEP_EVALUATE else ()
    return (*STEP_OUTPUTS.get(step, ()), *extra)


# Exit codes of `ferry step`: EXIT_TRANSIENT (EX_TEMPFAIL, re-exported above) asks the rendered retryStrategy and
# the local runner to try again (MLflow or Ray briefly unreachable); any other failure is final.
EXIT_OK = 0

# Why a pipeline run exists: the Workflow argument PARAM_TRIGGER and (labelsFrom) the label LABEL_TRIGGER.
TRIGGER_SPEC = "spec"  # a new spec hash (the spec's own Workflow)
TRIGGER_SCHEDULE = "schedule"  # the CronWorkflow
TRIGGER_DRIFT = "drift"  # the drift alert's Sensor, or locally the alert receiver
TRIGGER_MANUAL = "manual"  # `ferry submit --retrain`
TRIGGERS = (TRIGGER_SPEC, TRIGGER_SCHEDULE, TRIGGER_DRIFT, TRIGGER_MANUAL)
# The pipeline WorkflowTemplate's arguments.
PARAM_SPEC_HASH = "spec-hash"
PARAM_TRIGGER = "trigger"

# Alert names: the rules (ferry.render.alerts) raise them; the retraining Sensor, the local receiver and
# Alertmanager's inhibition rules match on them; docs/runbooks has one page each (runbook_file).
ALERT_ERROR_BUDGET_BURN = "FerryModelErrorBudgetBurn"
ALERT_LATENCY_BUDGET_BURN = "FerryModelLatencyBudgetBurn"
ALERT_DRIFT_HIGH = "FerryModelDriftHigh"
ALERT_CANARY_ROLLED_BACK = "FerryModelCanaryRolledBack"
ALERT_PIPELINE_FAILED = "FerryModelPipelineFailed"
ALERT_STALE = "FerryModelStale"
ALERT_QUALITY_LOW = "FerryModelQualityLow"
ALERT_RAY_HEAD_DOWN = "FerryRayHeadDown"
ALERT_MLFLOW_DOWN = "FerryMLflowDown"
ALERT_SERVE_REPLICAS_UNHEALTHY = "FerryServeReplicasUnhealthy"
MODEL_ALERTS = (ALERT_ERROR_BUDGET_BURN, ALERT_LATENCY_BUDGET_BURN, ALERT_DRIFT_HIGH, ALERT_CANARY_ROLLED_BACK,
                ALERT_PIPELINE_FAILED, ALERT_STALE, ALERT_QUALITY_LOW)
PLATFORM_ALERTS = (ALERT_RAY_HEAD_DOWN, ALERT_MLFLOW_DOWN, ALERT_SERVE_REPLICAS_UNHEALTHY)


def workflow_template_name(model: str) -> str:
    return f"{model}-pipeline"


def workflow_name(model: str, spec_hash: str) -> str:
    """New hash, new name, new run; the same hash names the same (already existing) Workflow."""
    return f"{model}-{spec_hash}"


def retrain_workflow_prefix(model: str, trigger: str) -> str:
    """Runs outside the spec's own (a drift alert, `ferry submit`): Argo's generateName on a cluster; locally
    a UTC stamp follows. CronWorkflow runs are `<model>-retrain-<time>` (cron_workflow_name)."""
    return f"{model}-{trigger}-"


def cron_workflow_name(model: str) -> str:
    return f"{model}-retrain"


def sensor_name(model: str) -> str:
    """The Argo Events Sensor that starts `model`'s retraining when its drift alert fires."""
    return f"{model}-retrain-on-drift"


def spec_configmap_name(model: str) -> str:
    return f"{model}-spec"


def mutex_name(model: str) -> str:
    return f"ferry-model-{model}"


def workflow_parameter(name: str) -> str:
    """Argo's reference to one of the Workflow's arguments, e.g. {{workflow.parameters.spec-hash}}."""
    return "{{workflow.parameters." + name + "}}"


def rayjob_prefix(model: str, step: str) -> str:
    """generateName of a step's RayJob: `<model>-<step>-`, the model cut to a prefix and a digest when the
    name would pass KubeRay's limit. Run names (up to 63 characters) do not fit, so LABEL_WORKFLOW carries it."""
    room = RAYJOB_NAME_MAX - GENERATE_NAME_RANDOM - len(f"-{step}-")
    return f"{shortened(model, room)}-{step}-"


def shortened(name: str, limit: int) -> str:
    """`name` itself when it fits in `limit` characters, else a prefix and a digest of the whole name (stable,
    distinct for names sharing a prefix)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[:limit - len(digest) - 1].rstrip('-')}-{digest}"


def ray_submission_id(workflow: str, step: str) -> str:
    """Ray job id a local run uses for a step; stable, so a resumed run finds the job it started."""
    return f"{workflow}-{step}"


def registered_model_name(model: str) -> str:
    return model


def experiment_name(model: str) -> str:
    return f"ferry/{model}"


def rayservice_name(model: str) -> str:
    return model


def application_name(model: str) -> str:
    return f"ferry-{model}"


def prometheus_rule_name(model: str) -> str:
    return model


def pod_monitor_name(model: str) -> str:
    return model


def dashboard_configmap_name(model: str) -> str:
    return f"{model}-dashboard"


def dashboard_uid(model: str) -> str:
    """Grafana caps a dashboard uid at 40 characters; long model names keep a prefix and a digest."""
    uid = f"ferry-{model}"
    if len(uid) <= GRAFANA_UID_MAX:
        return uid
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{uid[:GRAFANA_UID_MAX - 9]}-{digest}"


def runbook_file(alert: str) -> str:
    """`FerryModelDriftHigh` -> `ferry-model-drift-high.md` (docs/runbooks/README.md conventions)."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", alert.replace("MLflow", "Mlflow"))
    return f"{words.lower()}.md"


def runbook_url(alert: str) -> str:
    return RUNBOOK_URL_BASE + runbook_file(alert)


def labels(model: str, component: str, spec_hash: str | None = None) -> dict[str, str]:
    result = {
        "app.kubernetes.io/name": model,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": PART_OF,
        LABEL_MODEL: model,
    }
    if spec_hash:
        result[LABEL_SPEC_HASH] = spec_hash
    return result


def argocd_workflow_annotations() -> dict[str, str]:
    """Argo CD must neither prune finished runs nor report them as drift (DESIGN §5)."""
    return {
        "argocd.argoproj.io/sync-options": "Prune=false",
        "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
        # After its WorkflowTemplate (wave 0): a Workflow created first would fail at once.
        "argocd.argoproj.io/sync-wave": "1",
    }

# The logs serving appends to (ferry.serving.prediction_log): <uri>/<kind>/model=<model>/date=<day>/...
LOG_PREDICTIONS = "predictions"
LOG_LABELS = "labels"
LOG_SHADOW = "shadow"  # scores of the model that did not answer, for paired judgement on labels
# The metric a ranking workload's canary judges feedback on (ferry.steps.feedback): the share of clicks on an item
# the answer before them listed, for each model on the same clicks (`rollout.outcomes.metrics`).
FEEDBACK_HIT_RATE = "hit_rate"
LOG_LOCAL_DIR = "prediction-log"  # under the local state folder (.ferry/prediction-log): `ferry up`'s log URI
# On a cluster: beside MLflow's artifacts (gitops/platform/apps/mlflow.yaml's bucket). Serving pods write there
# with the credentials of the Secret LOG_SECRET (optional: without it, the pod's own identity, e.g. IRSA).
LOG_CLUSTER_URI = "s3://ferry-mlflow/prediction-log"
LOG_SECRET = "ferry-prediction-log"  # noqa: S105  # pragma: allowlist secret (a Secret's name)
# A `source: log` data step only reads the log: its own (optional) Secret, for keys that may only read.
LOG_READER_SECRET = "ferry-prediction-log-reader"  # noqa: S105  # pragma: allowlist secret (a Secret's name)
LOG_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # pragma: allowlist secret (key names)


# The online feature state store on a cluster (gitops/platform/apps/redis.yaml) and the Secret holding its
# password, which serving pods read into STATE_STORE_PASSWORD_ENV.
STATE_STORE_HOST = "ferry-redis.ferry-system.svc.cluster.local"
STATE_STORE_PORT = 6379
STATE_STORE_SECRET = "ferry-redis"  # noqa: S105  # pragma: allowlist secret (a Secret's name)
STATE_STORE_SECRET_KEY = "redis-password"  # noqa: S105  # pragma: allowlist secret (a key's name)
STATE_STORE_PASSWORD_ENV = "FERRY_REDIS_PASSWORD"  # noqa: S105  # pragma: allowlist secret (a variable's name)


def state_namespace(model: str) -> str:
    """The key prefix of a model's online feature state in the state store (Redis)."""
    return f"ferry:{model}"
