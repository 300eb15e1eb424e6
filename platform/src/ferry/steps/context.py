"""What every step shares: the validated spec, its hash, the workload, MLflow, and output parameters.

Steps are idempotent: each looks for its own finished MLflow run (tags ferry.workflow + ferry.step)
first and, if found, re-emits that run's outputs instead of redoing the work.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run

from ferry.adapters.git import head_commit
from ferry.adapters.registry import Registry
from ferry.adapters.workloads import load_workload
from ferry.contract import names
from ferry.contract.errors import StepFailed
from ferry.settings import Settings
from ferry.spec.hashing import spec_hash
from ferry.spec.models import ModelSpec
from ferry.spec.workload import Workload


@dataclass
class StepContext:
    settings: Settings
    spec: ModelSpec
    spec_hash: str
    workflow: str
    step: str
    workload: Workload
    registry: Registry
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.spec.metadata.name

    def tags(self) -> dict[str, str]:
        return {names.TAG_WORKFLOW: self.workflow, names.TAG_STEP: self.step, names.TAG_SPEC_HASH: self.spec_hash,
                names.TAG_MODEL: self.model, names.TAG_GIT_COMMIT: git_commit(self.settings)}

    def finished_run(self, step: str | None = None) -> Run | None:
        return self.registry.step_run(self.model, self.workflow, step or self.step)

    def require_run(self, step: str) -> Run:
        run = self.finished_run(step)
        if run is None:
            raise StepFailed(f"step {step!r} of {self.workflow} has no finished MLflow run; run it first")
        return run

    @contextmanager
    def mlflow_run(self) -> Iterator[Run]:
        mlflow.set_tracking_uri(self.registry.uri)
        with mlflow.start_run(experiment_id=self.registry.experiment_id(self.model),
                              run_name=f"{self.workflow}-{self.step}", tags=self.tags()) as run:
            yield run

    def emit(self, values: Mapping[str, Any]) -> None:
        """Output parameters, one file each, where Argo (valueFrom.path) or the local runner reads them."""
        self.outputs.update({k: _as_text(v) for k, v in values.items()})
        folder = self.settings.outputs_dir or Path(os.environ.get(names.OUTPUTS_DIR_ENV, "/tmp/ferry-outputs"))  # noqa: S108
        folder.mkdir(parents=True, exist_ok=True)
        for key, value in self.outputs.items():
            (folder / key).write_text(value)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def git_commit(settings: Settings) -> str:
    return os.environ.get("FERRY_GIT_COMMIT") or head_commit(settings.home)


def read_spec(spec_arg: str, settings: Settings) -> ModelSpec:
    """`--spec` is a path (relative ones resolve against FERRY_HOME) or the spec JSON itself."""
    if spec_arg.lstrip().startswith("{"):
        return ModelSpec.model_validate_json(spec_arg)
    path = Path(spec_arg)
    path = path if path.is_absolute() else settings.home / path
    try:
        return ModelSpec.model_validate_json(path.read_text())
    except OSError as exc:
        raise StepFailed(f"cannot read the rendered spec {path}: {exc.strerror}") from None


def build_context(step: str, spec_arg: str, workflow: str, expect_hash: str | None, settings: Settings) -> StepContext:
    spec = read_spec(spec_arg, settings)
    digest = spec_hash(spec)
    if expect_hash and expect_hash != digest:
        raise StepFailed(f"the spec's hash is {digest} but this run was created for {expect_hash}: the spec "
                         "changed under a running Workflow; let the new Workflow train it")
    workload = load_workload(spec.spec.workload)
    return StepContext(settings, spec, digest, workflow, step, workload, Registry(settings.mlflow_uri))


def dump_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
