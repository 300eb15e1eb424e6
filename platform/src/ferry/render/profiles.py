"""Per-environment rendering choices, as constants: rendering stays a pure function of (spec, env)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EnvName = Literal["local", "prod"]
RAY_VERSION = "2.60.0"
FERRY_VERSION = "0.1.0"


@dataclass(frozen=True)
class EnvProfile:
    name: EnvName
    namespace: str
    image: str
    mlflow_uri: str
    service_account: str
    # Where a step finds the rendered spec: a ConfigMap mount on a cluster, the rendered file locally.
    spec_mount: str | None
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
        service_account="ferry-workflow",
        spec_mount=None,
    ),
    "prod": EnvProfile(
        name="prod",
        namespace="ferry",
        image=f"ghcr.io/ferry-ml/ferry:{FERRY_VERSION}",
        mlflow_uri="http://mlflow.ferry-system.svc.cluster.local:5000",
        service_account="ferry-workflow",
        spec_mount="/etc/ferry/spec",
    ),
}
