"""KubeRay v1 RayJob manifests for the tune and train steps (what KubeRay runs with the entrypoint)."""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from ferry.contract import names
from ferry.render import pods
from ferry.render.profiles import RAY_VERSION, EnvProfile
from ferry.spec.models import ModelSpec

HEAD_CPUS = 1
HEAD_MEMORY = "2Gi"
# What Argo's resource step waits on (label-selector syntax; Argo ANDs a success condition's requirements and
# ORs a failure condition's). KubeRay v1.7 ends a RayJob as Complete (jobStatus SUCCEEDED or STOPPED), Failed
# (FAILED, or a deadline / submission / status-check failure that may leave jobStatus empty or RUNNING) or
# ValidationFailed (jobStatus empty): every end but success must fail the step, or it waits for its bound.
RAYJOB_SUCCESS_CONDITION = "status.jobStatus == SUCCEEDED"
RAYJOB_FAILURE_CONDITION = ("status.jobDeploymentStatus in (Failed, ValidationFailed), "
                            "status.jobStatus in (FAILED, STOPPED)")
# The step's own bound past the RayJob's activeDeadlineSeconds: KubeRay's reconcile and Argo's status polling.
STEP_DEADLINE_SLACK_S = 600
# How often Ray Train's controller polls its workers (Ray 2.60 default: 2 s). A worker's `ray.train.report` waits in
# a queue of one until the next poll takes it, so every epoch lasted at least one poll: 6 short epochs took 22 s
# instead of 9 s. A missed poll is not a failure (a worker is only declared dead after a 10-minute hang), and a
# poll is one small remote call per worker.
TRAIN_POLL_INTERVAL_S = "0.25"


def step_deadline_seconds(profile: EnvProfile) -> int:
    """How long a tune/train step may wait on its RayJob, whatever KubeRay reports."""
    return profile.rayjob_deadline_seconds + STEP_DEADLINE_SLACK_S


def step_entrypoint(step: str, profile: EnvProfile, model: str) -> str:
    """The command KubeRay runs on the head (and the local runner submits to the local head)."""
    args = ["ferry", "step", step, "--spec", profile.spec_path(model),
            "--run", "{{workflow.name}}", "--expect-hash", names.workflow_parameter(names.PARAM_SPEC_HASH)]
    return " ".join(shlex.quote(arg) if "{{" not in arg else arg for arg in args)


def worker_shape(model: ModelSpec, step: str) -> tuple[int, float, float, str]:
    """(replicas, cpus, gpus, memory) per worker pod for a step."""
    training = model.spec.training
    res = training.resources
    if step == names.STEP_TUNE and training.tune:
        tune = training.tune
        return tune.max_concurrent, tune.cpus_per_trial, tune.gpus_per_trial, res.memory_per_worker
    return res.workers, res.cpus_per_worker, res.gpus_per_worker, res.memory_per_worker


def _job_env(profile: EnvProfile) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": profile.mlflow_uri, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": TRAIN_POLL_INTERVAL_S}


def rayjob(model: ModelSpec, step: str, profile: EnvProfile, spec_hash: str) -> dict[str, Any]:
    name = model.metadata.name
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "generateName": names.rayjob_prefix(name, step),
            "namespace": profile.namespace,
            "labels": {**names.labels(name, f"{step}-job", spec_hash), names.LABEL_STEP: step,
                       names.LABEL_WORKFLOW: "{{workflow.name}}"},
        },
        "spec": {
            "entrypoint": step_entrypoint(step, profile, name),
            "runtimeEnvYAML": yaml.safe_dump({"env_vars": _job_env(profile)}),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": profile.rayjob_ttl_seconds,
            "activeDeadlineSeconds": profile.rayjob_deadline_seconds,
            "backoffLimit": 0,
            "submissionMode": "K8sJobMode",
            "submitterPodTemplate": _submitter(profile),
            "rayClusterSpec": _cluster(model, step, profile),
        },
    }


def _submitter(profile: EnvProfile) -> dict[str, Any]:
    """KubeRay's default submitter pod has no securityContext; the `restricted` namespace would reject it."""
    return {"spec": {
        "restartPolicy": "Never",
        "serviceAccountName": profile.rayjob_service_account,
        "automountServiceAccountToken": False,
        "securityContext": pods.pod_security(),
        "containers": [{"name": "ray-job-submitter", **pods.image(profile),
                        "resources": pods.resources(0.5, "512Mi"),
                        "securityContext": {**pods.container_security(), "readOnlyRootFilesystem": False}}],
    }}


def _cluster(model: ModelSpec, step: str, profile: EnvProfile) -> dict[str, Any]:
    return {
        "rayVersion": RAY_VERSION,
        "authOptions": {"mode": "token"},
        "headGroupSpec": {
            # The head only runs the driver: no trial or train worker lands on it.
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},  # noqa: S104 - pod IP
            "template": _pod_template("ray-head", profile, model, HEAD_CPUS, HEAD_MEMORY, 0),
        },
        "workerGroupSpecs": [_worker_group(model, step, profile)],
    }


def _worker_group(model: ModelSpec, step: str, profile: EnvProfile) -> dict[str, Any]:
    replicas, cpus, gpus, memory = worker_shape(model, step)
    return {
        "groupName": "gpu-workers" if gpus > 0 else "cpu-workers",
        "replicas": replicas,
        "minReplicas": replicas,
        "maxReplicas": replicas,
        "rayStartParams": {},
        "template": _pod_template("ray-worker", profile, model, cpus, memory, gpus),
    }


def _pod_template(container: str, profile: EnvProfile, model: ModelSpec, cpus: float, memory: str,
                  gpus: float) -> dict[str, Any]:
    name = model.metadata.name
    spec: dict[str, Any] = {
        "serviceAccountName": profile.rayjob_service_account,
        "automountServiceAccountToken": False,
        "securityContext": pods.pod_security(),
        "containers": [{
            "name": container,
            **pods.image(profile, gpus),  # a GPU group gets the CUDA build, a CPU head the CPU one
            "resources": pods.resources(cpus, memory, gpus),
            "env": pods.env_vars(profile),
            "securityContext": {**pods.container_security(), "readOnlyRootFilesystem": False},
            "volumeMounts": pods.volume_mounts(profile),
        }],
        "volumes": pods.volumes(profile, names.spec_configmap_name(name)),
    }
    tolerations = pods.gpu_tolerations(gpus)
    if tolerations:
        spec["tolerations"] = tolerations
    return {"metadata": {"labels": names.labels(name, "ray")}, "spec": spec}
