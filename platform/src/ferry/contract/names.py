"""The one place that decides names, labels, annotations and MLflow tags.

Everything that must agree across the cluster, the local runner and the steps (a Workflow's name,
the RayJob it creates, the registered model, the tags steps search by) is derived here.
"""

from __future__ import annotations

import hashlib
import re

PART_OF = "ferry"
DOMAIN = "ferry.dev"

LABEL_MODEL = f"{DOMAIN}/model"
LABEL_SPEC_HASH = f"{DOMAIN}/spec-hash"
LABEL_STEP = f"{DOMAIN}/step"
LABEL_TRIGGER = f"{DOMAIN}/trigger"  # why a pipeline run exists (ferry.render.workflow.TRIGGERS)

# MLflow tags through which steps find each other's results (no Argo artifact repository needed).
TAG_WORKFLOW = "ferry.workflow"
TAG_STEP = "ferry.step"
TAG_SPEC_HASH = "ferry.spec_hash"
TAG_MODEL = "ferry.model"
TAG_GIT_COMMIT = "ferry.git_commit"
TAG_DATASET_DIGEST = "ferry.dataset_digest"
TAG_ROLLOUT_WEIGHT = "ferry.rollout.weight"
TAG_ROLLOUT_STATE = "ferry.rollout.state"
TAG_ROLLOUT_REASON = "ferry.rollout.reason"
# Set at register: when the version's training finished (RFC 3339, UTC) and where its drift reference is.
TAG_TRAINED_AT = "ferry.trained_at"
TAG_REFERENCE = "ferry.reference"

# Every alert's runbook_url is this base plus docs/runbooks/<alert in kebab case>.md.
RUNBOOK_URL_BASE = "https://github.com/ferry-ml/ferry/blob/main/docs/runbooks/"
# The label kube-prometheus-stack's Grafana sidecar watches ConfigMaps for (gitops/platform/apps).
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"
GRAFANA_UID_MAX = 40

ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"

STEPS = ("data", "tune", "train", "evaluate", "register", "rollout")
RAY_STEPS = ("tune", "train")


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


def rayjob_prefix(step: str) -> str:
    return "{{workflow.name}}-" + step + "-"


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
