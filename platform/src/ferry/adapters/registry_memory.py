"""`RegistryPort` in memory: the registry every unit test uses, with MLflow's semantics.

Same contract as the MLflow implementation (tests/support/registry_contract.py runs one suite against
both): versions numbered from 1 per registered model, one version per alias, reserved alias names
refused, tags stored as text, NotFound for a missing model or version, `alias` None and `delete_alias` a
no-op for an unset alias. What MLflow stores as artifacts lives here in dicts: drift references by their
`runs:/` URI, and programs (what `load_pytorch_version` returns) given with `register_version(program=)`.

Outages are simulated with `faults`: called with the operation's name before each one (the primitives,
not the queries built on them), a True makes that operation raise RegistryUnavailable, as the MLflow
implementation does when the server is down. Every write that landed is kept in `writes`, in order (what
a reader polling the registry could have seen, and when); `now` stamps them and the versions' creation
times (a test's fake clock).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as evolve
from typing import Any

from ferry.adapters.registry_port import (
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

Faults = Callable[[str], bool]
RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)  # MLflow reserves these for version lookups


def no_faults(operation: str) -> bool:
    return False


@dataclass(frozen=True)
class Write:
    """One write that landed: when, which operation, on which version (or alias), with which values."""

    at: float
    operation: str
    model: str
    target: str
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Model:
    tags: dict[str, str]
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    programs: dict[str, Any] = field(default_factory=dict)


class MemoryRegistry(RegistryPort):
    def __init__(self, faults: Faults = no_faults, now: Callable[[], float] = time.time) -> None:
        self.faults = faults
        self.now = now
        self._models: dict[str, _Model] = {}
        self._references: dict[str, str] = {}  # URI → the reference's JSON, as MLflow keeps the artifact
        self.writes: list[Write] = []
        self._lock = threading.Lock()  # the router's watcher thread reads while a test writes

    def _check(self, operation: str) -> None:
        if self.faults(operation):
            raise RegistryUnavailable(f"the registry is unavailable (simulated outage during {operation})")

    def _model(self, model: str) -> _Model:
        found = self._models.get(model)
        if found is None:
            raise NotFound(f"registered model {names.registered_model_name(model)} not found")
        return found

    def _stored(self, model: str, version: str) -> ModelVersion:
        found = self._model(model).versions.get(str(version))
        if found is None:
            raise NotFound(f"{names.registered_model_name(model)} version {version} not found")
        return found

    def _with_aliases(self, model: str, found: ModelVersion) -> ModelVersion:
        aliases = tuple(sorted(a for a, v in self._model(model).aliases.items() if v == found.version))
        return evolve(found, aliases=aliases)

    def ensure_registered_model(self, model: str, owner: str) -> None:
        self._check("ensure_registered_model")
        with self._lock:
            self._models.setdefault(model, _Model({names.TAG_MODEL: model, "owner": owner}))

    def register_version(self, model: str, source: str, run_id: str | None = None,
                         tags: Mapping[str, object] | None = None, program: Any = None) -> ModelVersion:
        """Also `program`: what `load_pytorch_version` returns for this version (None: not servable)."""
        self._check("register_version")
        with self._lock:
            stored = self._model(model)
            number = str(max((int(v) for v in stored.versions), default=0) + 1)
            created = ModelVersion(model, number, source, run_id or None, "READY", self.now(), tag_text(tags or {}))
            stored.versions[number] = created
            self.writes.append(Write(self.now(), "register_version", model, number, created.tags))
            if program is not None:
                stored.programs[number] = program
            return created

    def version(self, model: str, version: str) -> ModelVersion:
        self._check("version")
        with self._lock:
            return self._with_aliases(model, self._stored(model, version))

    def find_versions(self, model: str, tags: Mapping[str, str] | None = None) -> list[ModelVersion]:
        self._check("find_versions")
        wanted = tag_text(tags or {}).items()
        with self._lock:
            if model not in self._models:
                return []
            found = [self._with_aliases(model, v) for v in self._models[model].versions.values()
                     if wanted <= v.tags.items()]
        return sorted(found, key=lambda v: v.number, reverse=True)

    def aliases(self, model: str) -> dict[str, str]:
        self._check("aliases")
        with self._lock:
            return dict(self._models[model].aliases) if model in self._models else {}

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        self._check("alias")
        with self._lock:
            version = self._models[model].aliases.get(alias) if model in self._models else None
            return None if version is None else self._with_aliases(model, self._stored(model, version))

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self._check("set_alias")
        if RESERVED_ALIAS.match(alias):
            raise RegistryError(f"alias name {alias!r} is reserved (MLflow keeps 'latest' and 'v<number>')")
        with self._lock:
            self._stored(model, version)
            self._model(model).aliases[alias] = str(version)
            self.writes.append(Write(self.now(), "set_alias", model, alias, {"version": str(version)}))

    def delete_alias(self, model: str, alias: str) -> None:
        self._check("delete_alias")
        with self._lock:
            if self._model(model).aliases.pop(alias, None) is not None:
                self.writes.append(Write(self.now(), "delete_alias", model, alias))

    def tag_version(self, model: str, version: str, tags: Mapping[str, object]) -> None:
        self._check("tag_version")
        with self._lock:
            found = self._stored(model, version)
            self._model(model).versions[found.version] = evolve(found, tags={**found.tags, **tag_text(tags)})
            self.writes.append(Write(self.now(), "tag_version", model, found.version, tag_text(tags)))

    def log_reference(self, run_id: str, reference: Reference) -> str:
        self._check("log_reference")
        uri = reference_uri(run_id)
        with self._lock:
            self._references[uri] = reference.to_json()
        return uri

    def version_facts(self, model: str, version: str) -> VersionFacts:
        tags = self.version(model, version).tags
        uri = tags.get(names.TAG_REFERENCE)
        reference = None
        if uri:
            with self._lock:
                text = self._references.get(uri)
            if text is None:
                raise NotFound(f"no drift reference at {uri} ({model} version {version}'s {names.TAG_REFERENCE})")
            reference = Reference.from_json(text, f"{model} version {version} ({uri})")
        return VersionFacts(reference, parse_trained_at(tags.get(names.TAG_TRAINED_AT)))

    def load_pytorch_version(self, model: str, version: str) -> Any:
        self._check("load_pytorch_version")
        with self._lock:
            self._stored(model, version)
            program = self._model(model).programs.get(str(version))
        if program is None:
            raise NotServable(f"{model} version {version} is not a torch.export (pt2) model; "
                              "register it with serialization_format='pt2'")
        return program
