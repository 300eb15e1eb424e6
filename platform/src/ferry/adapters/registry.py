"""MLflow as ferry's memory: step runs found by tags, model versions, aliases (the rollout state)."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ferry.contract import names
from ferry.stats.reference import Reference

NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
MISSING_ALIAS = "INVALID_PARAMETER_VALUE"  # what MLflow answers for an alias that is not set


class NotServable(Exception):
    """A model version whose artifact is not a torch.export (pt2) program: serving refuses it."""


@dataclass(frozen=True)
class RolloutView:
    """What the router reads from the registry: the alias versions and the challenger's weight (0-100)."""

    champion: str | None = None
    challenger: str | None = None
    weight: int = 0


@dataclass(frozen=True)
class VersionFacts:
    """What monitoring reads about a version: its drift reference and when it was trained (Unix seconds);
    None where the version has none (registered before ferry recorded them, or by hand)."""

    reference: Reference | None = None
    trained_at_s: float | None = None


REFERENCE_ARTIFACT = "ferry/reference.json"  # in the registering run's artifacts


def parse_trained_at(raw: object) -> float | None:
    """A `ferry.trained_at` tag (RFC 3339) as Unix seconds; None when missing or malformed."""
    try:
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def parse_weight(raw: object) -> int:
    """A weight tag as an int in [0, 100]; missing or malformed reads as 0, so a bad tag sends no traffic."""
    try:
        value = float(str(raw))
    except (TypeError, ValueError):
        return 0
    if value != value:  # NaN
        return 0
    return int(min(max(value, 0.0), 100.0))


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
        """The aliased version, None when the model or the alias does not exist. An unreachable registry
        raises: reading it as "no champion" would let a caller skip the comparison or the canary."""
        try:
            return self.client.get_model_version_by_alias(names.registered_model_name(model), alias)
        except MlflowException as exc:
            if exc.error_code in (NOT_FOUND, MISSING_ALIAS):
                return None
            raise

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
        with contextlib.suppress(MlflowException):
            self.client.delete_registered_model_alias(names.registered_model_name(model), alias)

    def tag_version(self, model: str, version: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(names.registered_model_name(model), version, key, str(value))

    def rollout_view(self, model: str) -> RolloutView:
        """Aliases and challenger weight in two calls. Raises when the registry cannot be read, so a caller
        can tell "no champion" (an empty view) from "registry down" (keep what it has)."""
        name = names.registered_model_name(model)
        try:
            registered = self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == NOT_FOUND:
                return RolloutView()
            raise
        aliases = dict(registered.aliases or {})
        champion, challenger = aliases.get(names.ALIAS_CHAMPION), aliases.get(names.ALIAS_CHALLENGER)
        weight = 0
        if challenger is not None:
            version = self.client.get_model_version(name, challenger)
            weight = parse_weight(version.tags.get(names.TAG_ROLLOUT_WEIGHT))
        return RolloutView(champion=champion, challenger=challenger, weight=weight)

    def load_pytorch_version(self, model: str, version: str) -> Any:
        """The registered version as a torch.export program (what `ferry step register` logs, format pt2).

        A pickled (`model.pth`) artifact is refused before MLflow could unpickle it. The download goes
        through this client's URI rather than MLflow's process-wide one, so a caller needs no global setup.
        """
        import mlflow.artifacts
        import mlflow.pytorch

        source = self.client.get_model_version_download_uri(names.registered_model_name(model), version)
        with tempfile.TemporaryDirectory(prefix="ferry-model-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=self.uri,
                                                             dst_path=tmp))
            data = local / "data"
            if not (data / "model.pt2").is_file() or (data / "model.pth").exists():
                raise NotServable(f"{model} version {version} is not a torch.export (pt2) model; "
                                  "register it with serialization_format='pt2'")
            return mlflow.pytorch.load_model(str(local))

    def log_reference(self, run_id: str, reference: Reference) -> str:
        """Store a drift reference in a run's artifacts; returns the URI the version's tag records."""
        self.client.log_text(run_id, reference.to_json(), REFERENCE_ARTIFACT)
        return f"runs:/{run_id}/{REFERENCE_ARTIFACT}"

    def version_facts(self, model: str, version: str) -> VersionFacts:
        """The version's drift reference (downloaded from the URI in its `ferry.reference` tag) and its
        training time. Raises when the registry is unreachable or the reference is malformed."""
        import mlflow.artifacts

        tags = self.client.get_model_version(names.registered_model_name(model), version).tags
        uri = tags.get(names.TAG_REFERENCE)
        reference = None
        if uri:
            with tempfile.TemporaryDirectory(prefix="ferry-reference-") as tmp:
                path = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=self.uri, dst_path=tmp)
                reference = Reference.from_json(Path(path).read_text(), f"{model} version {version} ({uri})")
        return VersionFacts(reference, parse_trained_at(tags.get(names.TAG_TRAINED_AT)))
