"""MLflow as ferry's memory: the model registry behind `RegistryPort`, and the step runs found by tags.

`Registry` is the only code outside the steps that talks to MLflow's client. Every registry call goes
through `_translated`, so what leaves this module is ferry's (`ferry.adapters.registry_port`): a missing
model, version or alias is NotFound (or None / {} where the port says so), an unreachable or failing server
is RegistryUnavailable, a refused request RegistryError; never an MlflowException. The run methods
(`experiment_id`, `step_run`) serve the steps, which log runs with MLflow themselves: they return MLflow's
`Run`, but raise ferry's errors too (an unreachable MLflow makes a step transient, exit 75).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion as MlflowVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ferry.adapters.registry_port import (
    REFERENCE_ARTIFACT,
    ModelVersion,
    NotFound,
    NotServable,
    RegistryError,
    RegistryPort,
    RegistryUnavailable,
    VersionFacts,
    parse_trained_at,
    reference_uri,
    tag_text,
)
from ferry.contract import names
from ferry.stats.reference import Reference

MISSING_ALIAS = "INVALID_PARAMETER_VALUE"  # what MLflow answers for an alias that is not set
HTTP_NOT_FOUND, HTTP_TOO_MANY = 404, 429


def _translate(exc: Exception, uri: str, what: str) -> RegistryError:
    """MLflow's error as ferry's: 404 NotFound; 429, 5xx and connection failures (which MLflow's REST client
    reports as INTERNAL_ERROR, or requests raises as an OSError) RegistryUnavailable; any other 4xx refused."""
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        if status == HTTP_NOT_FOUND:
            return NotFound(f"{what}: {exc.message}")
        if status == HTTP_TOO_MANY or status >= 500:
            return _unavailable(uri, what, exc.message)
        return RegistryError(f"MLflow at {uri} refused {what}: {exc.message}")
    return _unavailable(uri, what, str(exc))


def _unavailable(uri: str, what: str, detail: str) -> RegistryUnavailable:
    return RegistryUnavailable(f"MLflow at {uri} is unavailable ({what}): {detail}. Is it running? "
                               "(`ferry up` starts it locally.)")


def _version(found: MlflowVersion, model: str) -> ModelVersion:
    return ModelVersion(model=model, version=str(found.version), source=str(found.source or ""),
                        run_id=found.run_id or None, status=str(found.status or ""),
                        created_at_s=(found.creation_timestamp or 0) / 1000, tags=dict(found.tags or {}),
                        aliases=tuple(found.aliases or ()))


class Registry(RegistryPort):
    def __init__(self, tracking_uri: str) -> None:
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except (MlflowException, OSError) as exc:
            raise _translate(exc, self.uri, what) from exc

    # --- runs (the steps') ---------------------------------------------------------------------------

    def experiment_id(self, model: str) -> str:
        name = names.experiment_name(model)
        with self._translated(f"finding experiment {name}"):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            try:
                return str(self.client.create_experiment(name, tags={names.TAG_MODEL: model}))
            except MlflowException:  # created concurrently by another step
                again = self.client.get_experiment_by_name(name)
                if again is None:
                    raise
                return str(again.experiment_id)

    def step_run(self, model: str, workflow: str, step: str, finished_only: bool = True) -> Run | None:
        """The newest run of `step` in `workflow`: how steps find each other, and how reruns skip."""
        query = f"tags.`{names.TAG_WORKFLOW}` = '{workflow}' and tags.`{names.TAG_STEP}` = '{step}'"
        if finished_only:
            query += " and attributes.status = 'FINISHED'"
        experiment = self.experiment_id(model)
        with self._translated(f"searching the runs of {workflow}"):
            runs = self.client.search_runs([experiment], query, max_results=1, order_by=["attributes.start_time DESC"])
        return runs[0] if runs else None

    def snapshot_run(self, model: str, digest: str) -> str | None:
        """The run whose artifact holds the dataset snapshot with `digest` (the first finished data run that
        wrote or reused it), or None: how an unchanged dataset is stored once."""
        query = (f"tags.`{names.TAG_DATASET_DIGEST}` = '{_quoted(digest)}' and "
                 f"tags.`{names.TAG_DATASET_SNAPSHOT_RUN}` != '' and attributes.status = 'FINISHED'")
        experiment = self.experiment_id(model)
        with self._translated(f"searching the dataset snapshot {digest}"):
            runs = self.client.search_runs([experiment], query, max_results=1, order_by=["attributes.start_time ASC"])
        return runs[0].data.tags[names.TAG_DATASET_SNAPSHOT_RUN] if runs else None

    def trained_on(self, model: str, spec_hash: str, digest: str, workflow: str) -> Run | None:
        """The finished evaluate run of a workflow other than `workflow` that trained `spec_hash` on the dataset
        `digest`, or None: the run identity (spec hash + data digest) that makes two triggers of the same window
        train once. A workflow that never got through evaluate (stopped, failed) does not count."""
        query = (f"tags.`{names.TAG_STEP}` = '{names.STEP_DATA}' and tags.`{names.TAG_SPEC_HASH}` = "
                 f"'{_quoted(spec_hash)}' and tags.`{names.TAG_DATASET_DIGEST}` = '{_quoted(digest)}' and "
                 "attributes.status = 'FINISHED'")
        experiment = self.experiment_id(model)
        with self._translated(f"searching the runs that trained on dataset {digest}"):
            runs = self.client.search_runs([experiment], query, max_results=50, order_by=["attributes.start_time ASC"])
        tags = [r.data.tags for r in runs]
        trainers = dict.fromkeys(t.get(names.TAG_DATASET_TRAINED_BY) or t.get(names.TAG_WORKFLOW, "") for t in tags)
        for trainer in trainers:
            evaluation = self.step_run(model, trainer, names.STEP_EVALUATE) if trainer != workflow else None
            if evaluation is not None:
                return evaluation
        return None

    # --- the registry (RegistryPort) -----------------------------------------------------------------

    def ensure_registered_model(self, model: str, owner: str) -> None:
        name = names.registered_model_name(model)
        with self._translated(f"creating registered model {name}"):
            try:
                self.client.get_registered_model(name)
            except MlflowException as exc:
                if exc.get_http_status_code() != HTTP_NOT_FOUND:
                    raise
                try:
                    self.client.create_registered_model(name, tags={names.TAG_MODEL: model, "owner": owner})
                except MlflowException:
                    self.client.get_registered_model(name)  # raced with another creator: fine if it exists

    def register_version(self, model: str, source: str, run_id: str | None = None,
                         tags: Mapping[str, object] | None = None) -> ModelVersion:
        name = names.registered_model_name(model)
        with self._translated(f"registering a version of {name}"):
            return _version(self.client.create_model_version(name, source, run_id=run_id,
                                                             tags=tag_text(tags or {})), model)

    def version(self, model: str, version: str) -> ModelVersion:
        name = names.registered_model_name(model)
        with self._translated(f"reading {name} version {version}"):
            return _version(self.client.get_model_version(name, version), model)

    def find_versions(self, model: str, tags: Mapping[str, str] | None = None) -> list[ModelVersion]:
        name = names.registered_model_name(model)
        query = " and ".join([f"name = '{_quoted(name)}'",
                              *(f"tags.`{key}` = '{_quoted(value)}'" for key, value in (tags or {}).items())])
        with self._translated(f"searching the versions of {name}"):
            found = [_version(v, model) for v in self.client.search_model_versions(query)]
        return sorted(found, key=lambda v: v.number, reverse=True)

    def aliases(self, model: str) -> dict[str, str]:
        name = names.registered_model_name(model)
        with self._translated(f"reading the aliases of {name}"):
            try:
                registered = self.client.get_registered_model(name)
            except MlflowException as exc:
                if exc.get_http_status_code() == HTTP_NOT_FOUND:
                    return {}
                raise
        return {str(k): str(v) for k, v in (registered.aliases or {}).items()}

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        name = names.registered_model_name(model)
        with self._translated(f"reading alias {alias} of {name}"):
            try:
                return _version(self.client.get_model_version_by_alias(name, alias), model)
            except MlflowException as exc:
                if exc.get_http_status_code() == HTTP_NOT_FOUND or exc.error_code == MISSING_ALIAS:
                    return None
                raise

    def set_alias(self, model: str, alias: str, version: str) -> None:
        name = names.registered_model_name(model)
        with self._translated(f"pointing alias {alias} of {name} at version {version}"):
            self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, model: str, alias: str) -> None:
        name = names.registered_model_name(model)
        with self._translated(f"removing alias {alias} of {name}"):
            self.client.delete_registered_model_alias(name, alias)  # MLflow answers OK for an unset alias

    def tag_version(self, model: str, version: str, tags: Mapping[str, object]) -> None:
        name = names.registered_model_name(model)
        with self._translated(f"tagging {name} version {version}"):
            for key, value in tag_text(tags).items():
                self.client.set_model_version_tag(name, version, key, value)

    def load_pytorch_version(self, model: str, version: str) -> Any:
        """The registered version as a torch.export program (what `ferry step register` logs, format pt2).

        A pickled (`model.pth`) artifact is refused before MLflow could unpickle it. The download goes
        through this client's URI rather than MLflow's process-wide one, so a caller needs no global setup.
        """
        import mlflow.artifacts
        import mlflow.pytorch

        name = names.registered_model_name(model)
        with self._translated(f"downloading {name} version {version}"), \
                tempfile.TemporaryDirectory(prefix="ferry-model-") as tmp:
            source = self.client.get_model_version_download_uri(name, version)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=self.uri,
                                                             dst_path=tmp))
            data = local / "data"
            if not (data / "model.pt2").is_file() or (data / "model.pth").exists():
                raise NotServable(f"{model} version {version} is not a torch.export (pt2) model; "
                                  "register it with serialization_format='pt2'")
            return mlflow.pytorch.load_model(str(local))

    def log_reference(self, run_id: str, reference: Reference) -> str:
        with self._translated(f"storing the drift reference of run {run_id}"):
            self.client.log_text(run_id, reference.to_json(), REFERENCE_ARTIFACT)
        return reference_uri(run_id)

    def version_facts(self, model: str, version: str) -> VersionFacts:
        import mlflow.artifacts

        tags = self.version(model, version).tags
        uri = tags.get(names.TAG_REFERENCE)
        reference = None
        if uri:
            with self._translated(f"downloading the drift reference {uri}"), \
                    tempfile.TemporaryDirectory(prefix="ferry-reference-") as tmp:
                path = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=self.uri, dst_path=tmp)
                reference = Reference.from_json(Path(path).read_text(), f"{model} version {version} ({uri})")
        return VersionFacts(reference, parse_trained_at(tags.get(names.TAG_TRAINED_AT)))


def _quoted(value: str) -> str:
    """A value inside MLflow's single-quoted search strings."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
