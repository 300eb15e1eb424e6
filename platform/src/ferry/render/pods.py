"""Pod-level building blocks shared by Workflow steps and Ray pods: hardened, with requests and limits."""

from __future__ import annotations

import math
from typing import Any

from ferry.contract import metrics, names
from ferry.render.profiles import IMAGE_PULL_POLICY, SCRAPE_INTERVAL_S, EnvProfile
from ferry.spec.models import ModelSpec

NON_ROOT_UID = 1000
SPEC_VOLUME = "ferry-spec"
SCRATCH_VOLUME = "scratch"


def image(profile: EnvProfile, gpus: float = 0) -> dict[str, str]:
    """A container's image fields: the CUDA build for a pod that asks for GPUs, the CPU build otherwise."""
    return {"image": profile.image_for(gpus), "imagePullPolicy": IMAGE_PULL_POLICY}


def container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": NON_ROOT_UID, "fsGroup": NON_ROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def resources(cpus: float, memory: str, gpus: float = 0) -> dict[str, Any]:
    """Requests equal limits (Guaranteed QoS) so training is not throttled or evicted first."""
    amounts: dict[str, Any] = {"cpu": _cpu(cpus), "memory": memory}
    limits = dict(amounts)
    if gpus > 0:
        # Kubernetes schedules whole GPUs; fractions are shared between Ray actors inside a pod.
        limits["nvidia.com/gpu"] = str(math.ceil(gpus))
    return {"requests": amounts, "limits": limits}


def _cpu(cpus: float) -> str:
    return str(int(cpus)) if float(cpus).is_integer() else f"{int(cpus * 1000)}m"


def env_vars(profile: EnvProfile) -> list[dict[str, str]]:
    return [
        {"name": "MLFLOW_TRACKING_URI", "value": profile.mlflow_uri},
        {"name": names.OUTPUTS_DIR_ENV, "value": profile.outputs_dir},
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 - writable emptyDir under a read-only root
    ]


def image_env(profile: EnvProfile) -> dict[str, str]:
    """A step's own image, recorded on the version it registers (`ferry lineage`)."""
    return {"name": names.IMAGE_ENV, "value": profile.image}


def log_reader_env(model: ModelSpec, step: str, profile: EnvProfile) -> list[dict[str, Any]]:
    """The steps that read the prediction log get its URI and read-only credentials from a Secret of their
    own (optional, as the routers'): the data step of a spec that trains on served traffic (`source: log`),
    and the rollout step of one with a shadow stage (it judges shadow scores and labels). No other step."""
    reads = ((step == names.STEP_DATA and model.spec.data.source == "log")
             or (step == names.STEP_ROLLOUT and model.spec.rollout.shadow is not None))
    if not reads or profile.prediction_log_uri is None:
        return []
    return [{"name": "FERRY_PREDICTION_LOG_URI_OVERRIDE", "value": profile.prediction_log_uri},
            *log_credentials_env(names.LOG_READER_SECRET)]


def log_credentials_env(secret: str) -> list[dict[str, Any]]:
    """Object-store credentials for the prediction log, from a Secret named in docs/install-cluster.md.
    Optional: without the Secret, pyarrow uses the pod's own identity (e.g. IRSA on EKS)."""
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for key in names.LOG_SECRET_KEYS]


def rollout_env(profile: EnvProfile) -> list[dict[str, Any]]:
    """The rollout step's settings (ferry.settings, FERRY_*) where they differ from its loopback defaults: the
    Prometheus it judges the canary on, and where Prometheus scrapes its own metrics (the pod IP, not loopback,
    kept up for two scrapes after the decision so FerryModelCanaryRolledBack sees the last one)."""
    env: list[dict[str, Any]] = []
    if profile.prometheus_url:
        env.append({"name": "FERRY_PROMETHEUS_URL_OVERRIDE", "value": profile.prometheus_url})
    if profile.scrape_rollout_pod:
        env += [{"name": "FERRY_ROLLOUT_METRICS_HOST_OVERRIDE",
                 "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "FERRY_ROLLOUT_METRICS_PORT", "value": str(metrics.ROLLOUT_METRICS_PORT)},
                {"name": "FERRY_ROLLOUT_METRICS_LINGER_S", "value": str(2 * SCRAPE_INTERVAL_S)}]
    return env


def rollout_ports(profile: EnvProfile) -> list[dict[str, Any]]:
    """The named port the rollout PodMonitor (ferry.render.monitoring) and the NetworkPolicy match."""
    if not profile.scrape_rollout_pod:
        return []
    return [{"name": metrics.METRICS_PORT_NAME, "containerPort": metrics.ROLLOUT_METRICS_PORT, "protocol": "TCP"}]


def volumes(profile: EnvProfile, model_configmap: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = [{"name": SCRATCH_VOLUME, "emptyDir": {}}]
    if profile.spec_mount:
        result.append({"name": SPEC_VOLUME, "configMap": {"name": model_configmap}})
    return result


def volume_mounts(profile: EnvProfile) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = [{"name": SCRATCH_VOLUME, "mountPath": "/tmp"}]  # noqa: S108
    if profile.spec_mount:
        result.append({"name": SPEC_VOLUME, "mountPath": profile.spec_mount, "readOnly": True})
    return result


def gpu_tolerations(gpus: float) -> list[dict[str, str]]:
    if gpus <= 0:
        return []
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
