"""Per-environment rendering choices, as constants: rendering stays a pure function of (spec, env)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ferry.contract import names

EnvName = Literal["local", "prod"]
ImageVariant = Literal["cpu", "cuda"]
RAY_VERSION = "2.60.0"
FERRY_VERSION = "0.1.0"  # pyproject.toml's version; image.yml's tags start with it
# What .github/workflows/image.yml builds (platform/deploy/Dockerfile's VARIANT) and the suffix it tags each with.
IMAGE_VARIANT_SUFFIX: dict[ImageVariant, str] = {"cpu": "", "cuda": "-cuda"}
# Pods pull with IfNotPresent: the prod tag is `<version>-<hash of the image's build inputs>` (`ferry image tag`),
# and image.yml never pushes a tag twice, so a node's cached image is always the code the tag names.
IMAGE_PULL_POLICY = "IfNotPresent"
# The image's virtualenv (platform/deploy/Dockerfile: /opt/venv) holds ferry's console scripts (pyproject.toml).
IMAGE_BIN = "/opt/venv/bin"
# kube-prometheus-stack (gitops/platform/apps/kube-prometheus-stack.yaml: release `kube-prometheus-stack` in
# `monitoring`, no fullnameOverride) names its Prometheus Service `<fullname>-prometheus`, port 9090; the
# fullname is the release name because it contains the chart's name (the chart's _helpers.tpl).
CLUSTER_PROMETHEUS_URL = "http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090"
# Scrape interval of ferry's PodMonitors; the rollout step lingers two of them after its decision.
SCRAPE_INTERVAL_S = 15


def image_variant(gpus: float) -> ImageVariant:
    """The build a pod needs: the CUDA one as soon as it asks for any GPU (the CPU build's torch has no CUDA)."""
    return "cuda" if gpus > 0 else "cpu"


def image_tag(base_tag: str, variant: ImageVariant) -> str:
    return f"{base_tag}{IMAGE_VARIANT_SUFFIX[variant]}"


@dataclass(frozen=True)
class EnvProfile:
    name: EnvName
    namespace: str
    image_repository: str
    mlflow_uri: str
    service_account: str
    # Where a step finds the rendered spec: a ConfigMap mount on a cluster, the rendered file locally.
    spec_mount: str | None
    serving_service_account: str = names.SERVICE_ACCOUNT_SERVING
    rayjob_service_account: str = names.SERVICE_ACCOUNT_RAYJOB
    # The Prometheus the rollout step judges a canary on. None: the step's own settings (loopback locally).
    prometheus_url: str | None = None
    # Whether Prometheus scrapes the rollout step's pod (then it serves its metrics on the pod IP, on a named
    # port, and lingers after its decision); locally `ferry up`'s Prometheus scrapes it on loopback.
    scrape_rollout_pod: bool = False
    # The online feature state store serving pods reach (host, port), with its password from a Secret; None:
    # set by the edge (`ferry up`'s Redis, ferry.serving.deploy).
    state_store: tuple[str, int] | None = None
    # Where serving pods log scored raw requests and labels (ferry.serving.prediction_log). None: set by the
    # edge (`ferry up`: .ferry/prediction-log).
    prediction_log_uri: str | None = None
    repo_url: str = "https://github.com/ferry-ml/ferry.git"
    target_revision: str = "main"
    rayjob_ttl_seconds: int = 600
    rayjob_deadline_seconds: int = 7200
    workflow_deadline_seconds: int = 6 * 3600
    outputs_dir: str = "/tmp/ferry-outputs"  # noqa: S108 - an emptyDir in the pod
    # The CPU build's tag. The edge (ferry.cli.generated, ferry.workspace) sets prod's to `ferry image tag`;
    # the bare version left here is what image.yml never pushes, so a render that skipped it cannot pass.
    image_base_tag: str = FERRY_VERSION

    @property
    def image(self) -> str:
        """The CPU image: Workflow steps, RayJob submitters and heads, serving pods."""
        return self.image_for(0)

    def image_for(self, gpus: float) -> str:
        """The image of a pod that asks for `gpus` GPUs (fractions share one GPU, still a CUDA pod)."""
        return f"{self.image_repository}:{image_tag(self.image_base_tag, image_variant(gpus))}"

    def with_image_tag(self, base_tag: str | None) -> EnvProfile:
        return self if base_tag is None else replace(self, image_base_tag=base_tag)

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
        image_repository="ferry",
        mlflow_uri="http://127.0.0.1:5000",
        service_account=names.SERVICE_ACCOUNT_WORKFLOW,
        spec_mount=None,
    ),
    "prod": EnvProfile(
        name="prod",
        namespace="ferry",
        image_repository="ghcr.io/ferry-ml/ferry",
        mlflow_uri="http://mlflow.ferry-system.svc.cluster.local:5000",
        service_account=names.SERVICE_ACCOUNT_WORKFLOW,
        spec_mount="/etc/ferry/spec",
        prometheus_url=CLUSTER_PROMETHEUS_URL,
        scrape_rollout_pod=True,
        state_store=(names.STATE_STORE_HOST, names.STATE_STORE_PORT),
        prediction_log_uri=names.LOG_CLUSTER_URI,
    ),
}
