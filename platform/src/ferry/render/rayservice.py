"""KubeRay v1 RayService per model: the serving router (ferry.serving.app) on its own Ray cluster.

The Serve application is the same one `ferry.serving.deploy.deploy_local` runs on the local head: one
`router` deployment whose args name the model, workload and registry. Rollout steps never touch this
object (the router reads aliases and weights from the registry), so Argo CD only changes it when the
serving spec changes; KubeRay then updates in place as long as only `serveConfigV2` differs (DESIGN §5).

Note the KubeRay v1.7 field name: a RayService's cluster is `rayClusterConfig` (a RayJob's is
`rayClusterSpec`).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from ferry.contract import names
from ferry.render import pods
from ferry.render.profiles import IMAGE_BIN, RAY_VERSION, EnvProfile
from ferry.spec.models import ModelSpec, ServingSpec, duration_s

DEFAULT_LABEL_DELAY_DAYS = 7  # the handbook's label delay, for a spec without data.split

IMPORT_PATH = "ferry.serving.app:build_app"
ROUTER_DEPLOYMENT = "router"
SERVE_PORT = 8000
DASHBOARD_PORT = 8265
DASHBOARD_AGENT_PORT = 52365
HEAD_CPUS = 1
HEAD_MEMORY = "2Gi"
WORKER_MEMORY = "2Gi"
WORKER_GROUP = "serve-workers"
# Where a Kubernetes client (Ray's KubeRay autoscaler: ray.autoscaler._private.kuberay.node_provider) reads the
# pod's API token, CA and namespace.
AUTOSCALER_API_VOLUME = "autoscaler-api-access"
KUBE_API_CREDENTIALS_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KUBE_API_CREDENTIALS_TTL_S = 3607  # what the kubelet projects for an automounted token


def deployment_options(serving: ServingSpec) -> dict[str, Any]:
    """Options of the router deployment, shared by the RayService and the local deploy."""
    replicas = serving.replicas
    return {
        # Serve's default of 5 would cap @serve.batch batches and a replica's throughput (DESIGN §5).
        "max_ongoing_requests": serving.max_ongoing_requests,
        "autoscaling_config": {"min_replicas": replicas.min, "max_replicas": replicas.max,
                               "target_ongoing_requests": replicas.target_ongoing_requests},
        "ray_actor_options": {"num_cpus": serving.cpus_per_replica},
    }


def app_args(model: ModelSpec, tracking_uri: str) -> dict[str, Any]:
    """`build_app`'s args (validated there as ferry.serving.schemas.AppArgs)."""
    return {"model": names.registered_model_name(model.metadata.name), "workload": model.spec.workload,
            "tracking_uri": tracking_uri, "serving": model.spec.serving.model_dump(mode="json"),
            "drift_window_s": duration_s(model.spec.monitoring.drift_window),
            "quality_metrics": list(dict.fromkeys(gate.metric for gate in model.spec.evaluation.gates))}


def state_store_args(model: ModelSpec, host: str, port: int, **password: str) -> dict[str, Any]:
    """Where the router finds the online feature state; `password` names where it reads the password from
    (`password_env` or `password_file`), never the password itself."""
    split = model.spec.data.split
    return {"host": host, "port": port, "namespace": names.state_namespace(model.metadata.name),
            "delay_days": split.delay_days if split else DEFAULT_LABEL_DELAY_DAYS, **password}


def serve_application(model: ModelSpec, profile: EnvProfile) -> dict[str, Any]:
    serving = model.spec.serving
    args = app_args(model, profile.mlflow_uri)
    if profile.state_store is not None:
        args["state_store"] = state_store_args(model, *profile.state_store,
                                               password_env=names.STATE_STORE_PASSWORD_ENV)
    if profile.prediction_log_uri is not None:
        args["prediction_log"] = {"uri": profile.prediction_log_uri}
    return {"name": model.metadata.name, "route_prefix": serving.route, "import_path": IMPORT_PATH,
            "args": args, "deployments": [{"name": ROUTER_DEPLOYMENT, **deployment_options(serving)}]}


def serve_config(model: ModelSpec, profile: EnvProfile) -> str:
    return yaml.safe_dump({"applications": [serve_application(model, profile)]}, sort_keys=False)


def rayservice(model: ModelSpec, profile: EnvProfile) -> dict[str, Any]:
    name = model.metadata.name
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": names.rayservice_name(name), "namespace": profile.namespace,
                     "labels": names.labels(name, "serving")},
        "spec": {"serveConfigV2": serve_config(model, profile), "rayClusterConfig": _cluster(model, profile)},
    }


def _cluster(model: ModelSpec, profile: EnvProfile) -> dict[str, Any]:
    serving = model.spec.serving
    head = _pod(model, profile, "ray-head", HEAD_CPUS, HEAD_MEMORY, _head_probes())
    head["spec"]["volumes"].append(_autoscaler_api_volume())
    # One replica per worker pod, so Serve autoscaling maps onto pods one to one; fractional replica
    # CPUs round up to whole pod CPUs because `ray start --num-cpus` takes an integer.
    worker_cpus = max(1, math.ceil(serving.cpus_per_replica))
    workers = _pod(model, profile, "ray-worker", worker_cpus, WORKER_MEMORY, _worker_probes())
    return {
        "rayVersion": RAY_VERSION,
        "authOptions": {"mode": "token"},
        "enableInTreeAutoscaling": True,  # Serve asks for replicas, the autoscaler adds worker pods
        # KubeRay's autoscaler sidecar has no securityContext by default: `restricted` would reject the head.
        "autoscalerOptions": {"securityContext": {**pods.container_security(), "readOnlyRootFilesystem": False},
                              "resources": pods.resources(0.5, "512Mi"),
                              "volumeMounts": [{"name": AUTOSCALER_API_VOLUME, "mountPath": KUBE_API_CREDENTIALS_DIR,
                                                "readOnly": True}]},
        "headGroupSpec": {
            # No replica lands on the head: it keeps the GCS and controller responsive under load.
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},  # noqa: S104 - pod IP
            "template": head,
        },
        "workerGroupSpecs": [{
            "groupName": WORKER_GROUP, "replicas": serving.replicas.min,
            "minReplicas": serving.replicas.min, "maxReplicas": serving.replicas.max,
            "rayStartParams": {}, "template": workers,
        }],
    }


def state_store_env(profile: EnvProfile) -> list[dict[str, Any]]:
    """The feature state store's password, from ferry's Secret (docs/install-cluster.md step 4) into the
    variable the router reads: never in the rendered args, which are in Git."""
    if profile.state_store is None:
        return []
    return [{"name": names.STATE_STORE_PASSWORD_ENV, "valueFrom": {"secretKeyRef": {
        "name": names.STATE_STORE_SECRET, "key": names.STATE_STORE_SECRET_KEY}}}]


def prediction_log_env(profile: EnvProfile) -> list[dict[str, Any]]:
    """The routers write the prediction log: its object store's credentials (pods.log_credentials_env)."""
    return [] if profile.prediction_log_uri is None else pods.log_credentials_env(names.LOG_SECRET)


# Ray Serve's high-throughput mode: HAProxy ingress and direct ingress to the replicas (see `ingress_env`); the
# local head sets the same on itself unless FERRY_LOCAL_INGRESS=python (ferry.local.supervisor.local_ingress).
HIGH_THROUGHPUT_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                       "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1"}


# What Ray starts as HAProxy on a cluster: ferry's `ferry-haproxy` (ferry.serving.haproxy_launch), which closes
# HAProxy's connections to a replica after each answer, then runs the HAProxy Ray would have run.
CLUSTER_HAPROXY_ENV = {"RAY_SERVE_HAPROXY_BINARY_PATH": f"{IMAGE_BIN}/{names.HAPROXY_LAUNCHER}"}


def ingress_env(serving: ServingSpec) -> list[dict[str, str]]:
    """Ray Serve's high-throughput mode ("Enable High Throughput on Ray Serve with KubeRay"), set on every
    pod: the controller, HAProxy and the replicas all read it at start. HAProxy answers on SERVE_PORT in
    place of the Python proxy and forwards to each router replica's own HTTP server, so a request makes
    one hop into the process that scores it. The mode buffers replica logs 1000 records deep; a buffer of
    1 keeps a replica's warnings (a refused model, a registry outage) in its log as they happen. HAProxy is
    started through `ferry-haproxy`, so a client's kept-alive connection is never closed unanswered when the
    only replica dies (ferry.serving.haproxy_launch)."""
    if serving.ingress != "haproxy":
        return []
    return [{"name": name, "value": value} for name, value in {**HIGH_THROUGHPUT_ENV, **CLUSTER_HAPROXY_ENV}.items()]


def _pod(model: ModelSpec, profile: EnvProfile, container: str, cpus: float, memory: str,
         probes: dict[str, Any]) -> dict[str, Any]:
    env = [*pods.env_vars(profile), {"name": "MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "value": "false"},
           *ingress_env(model.spec.serving), *state_store_env(profile), *prediction_log_env(profile)]
    return {
        "metadata": {"labels": names.labels(model.metadata.name, "serving")},
        "spec": {
            # Serving's own identity, not the pipeline's. Its only rights are the autoscaler Role KubeRay binds to
            # the head's ServiceAccount, and no container on port 8000 holds its token: see _autoscaler_api_volume.
            "serviceAccountName": profile.serving_service_account,
            "automountServiceAccountToken": False,
            "securityContext": pods.pod_security(),
            "containers": [{
                "name": container,
                **pods.image(profile),
                "resources": pods.resources(cpus, memory),
                "env": env,
                # Ray writes session files and sockets outside the /tmp emptyDir too.
                "securityContext": {**pods.container_security(), "readOnlyRootFilesystem": False},
                "volumeMounts": [{"name": pods.SCRATCH_VOLUME, "mountPath": "/tmp"}],  # noqa: S108
                **probes,
            }],
            "volumes": [{"name": pods.SCRATCH_VOLUME, "emptyDir": {}}],
        },
    }


def _autoscaler_api_volume() -> dict[str, Any]:
    """The head's API credentials, mounted into KubeRay's autoscaler sidecar only (autoscalerOptions.volumeMounts):
    the sidecar scales worker pods with them, while the Ray container, which serves HTTP, gets none. The same
    three files the kubelet would automount into every container."""
    return {"name": AUTOSCALER_API_VOLUME, "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": KUBE_API_CREDENTIALS_TTL_S}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}}


def _http_probe(path: str, port: int, period_s: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "initialDelaySeconds": 10, "periodSeconds": period_s,
            "timeoutSeconds": 2, "failureThreshold": failures}


def _head_probes() -> dict[str, Any]:
    # /api/gcs_healthz is one of the dashboard paths token auth leaves public, so probes need no token.
    return {"readinessProbe": _http_probe("/api/gcs_healthz", DASHBOARD_PORT, 5, 10),
            "livenessProbe": _http_probe("/api/gcs_healthz", DASHBOARD_PORT, 5, 120)}


def _worker_probes() -> dict[str, Any]:
    # Ready once this node's Serve proxy answers (it does not check the token); alive while the
    # dashboard agent accepts connections. What KubeRay injects for RayService workers, minus wget.
    liveness = {"tcpSocket": {"port": DASHBOARD_AGENT_PORT}, "initialDelaySeconds": 30, "periodSeconds": 5,
                "timeoutSeconds": 2, "failureThreshold": 120}
    return {"readinessProbe": _http_probe("/-/healthz", SERVE_PORT, 5, 10), "livenessProbe": liveness}
