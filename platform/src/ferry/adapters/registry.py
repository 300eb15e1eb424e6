"""MLflow as ferry's memory: step runs found by tags, model versions, aliases (the rollout state)."""

from __future__ import annotations

from typing import Any

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ferry.render import names


class Registry:
    def __init__(self, tracking_uri: str) -> None:
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def experiment_id(self, model: str) -> str:
        name = names.experiment_name(model)
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
        runs = self.client.search_runs([self.experiment_id(model)], query, max_results=1,
                                       order_by=["attributes.start_time DESC"])
        return runs[0] if runs else None

    def version_for_workflow(self, model: str, workflow: str) -> ModelVersion | None:
        query = f"name = '{names.registered_model_name(model)}' and tags.`{names.TAG_WORKFLOW}` = '{workflow}'"
        versions = self.client.search_model_versions(query)
        return versions[0] if versions else None

    def versions_with_hash(self, model: str, spec_hash: str) -> list[ModelVersion]:
        query = f"name = '{names.registered_model_name(model)}' and tags.`{names.TAG_SPEC_HASH}` = '{spec_hash}'"
        try:
            return list(self.client.search_model_versions(query))
        except MlflowException:
            return []

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version_by_alias(names.registered_model_name(model), alias)
        except MlflowException:
            return None

    def ensure_registered_model(self, model: str, owner: str) -> None:
        name = names.registered_model_name(model)
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name, tags={names.TAG_MODEL: model, "owner": owner})
            except MlflowException:
                self.client.get_registered_model(name)  # raced with another creator: fine if it exists

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(names.registered_model_name(model), alias, version)

    def delete_alias(self, model: str, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(names.registered_model_name(model), alias)
        except MlflowException:
            pass

    def tag_version(self, model: str, version: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(names.registered_model_name(model), version, key, str(value))
