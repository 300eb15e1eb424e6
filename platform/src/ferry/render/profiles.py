"""Per-environment rendering choices, as constants: rendering stays a pure function of (spec, env)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ferry.contract import names

EnvName = Literal["local", "prod"]
RAY_VERSION = "2.60.0"
FERRY_VERSION = "0.1.0"
# kube-prometheus-stack (gitops/platform/apps/kube-prometheus-stack.yaml: release `kube-prometheus-stack` in
# `monitoring`, no fullnameOverride) names its Prometheus Service `<fullname>-prometheus`, port 9090; the
# fullname is the release name because it contains the chart's name (the chart's _helpers.tpl).
CLUSTER_PROMETHEUS_URL = "http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090"
# Scrape interval of ferry's PodMonitors; the rollout step lingers two of them after its decision.
SCRAPE_INTERVAL_S = 15


@dataclass(frozen=True)
class EnvProfile:
    name: EnvName
    namespace: str
    image: str
    mlflow_uri: str
    service_account: str
    # Where a step finds the rendered spec: a ConfigMap mount on a cluster, the rendered file locally.
    spec_mount: str | None
    serving_service_account: str = names.SERVICE_ACCOUNT_SERVING
    # The Prometheus the rollout step judges a canary on. None: the step's own settings (loopback locally).
    prometheus_url: str | None = None
    # Whether Prometheus scrapes the rollout step's pod (then it serves its metrics on the pod IP, on a named
    # port, and lingers after its decision); locally `ferry up`'s Prometheus scrapes it on loopback.
    scrape_rollout_pod: bool = False
    repo_url: str = "https://github.com/ferry-ml/ferry.git"
    target_revision: str = "main"
    rayjob_ttl_seconds: int = 600
    rayjob_deadline_seconds: int = 7200
    workflow_deadline_seconds: int = 6 * 3600
    outputs_dir: str = "/tmp/ferry-outputs"  # noqa: S108 - an emptyDir in the pod

    def spec_path(self, model: str) -> str:
        if self.spec_mount:
            return f"{self.spec_mount}/spec.json"
        return f"{rendered_dir(self.name)}/{model}/spec.json"


def rendered_dir(env: EnvName) -> str:
    return f"gitops/rendered/{env}"


PROFILES: dict[EnvName, EnvProfile] = {
    "local": EnvProfile(
        name="local",
        namespace="ferry",
        image=f"ferry:{FERRY_VERSION}",
        mlflow_uri="http://127.0.0.1:5000",
        service_account=names.SERVICE_ACCOUNT_WORKFLOW,
        spec_mount=None,
    ),
    "prod": EnvProfile(
        name="prod",
        namespace="ferry",
        image=f"ghcr.io/ferry-ml/ferry:{FERRY_VERSION}",
        mlflow_uri="http://mlflow.ferry-system.svc.cluster.local:5000",
        service_account=names.SERVICE_ACCOUNT_WORKFLOW,
        spec_mount="/etc/ferry/spec",
        prometheus_url=CLUSTER_PROMETHEUS_URL,
        scrape_rollout_pod=True,
    ),
}
