"""The model registry as ferry sees it: versions, aliases and tags of a registered model, in ferry's own types.

DESIGN §4: the registry *is* the rollout state (aliases `champion` and `challenger`, the challenger's weight
as a version tag). Everything that reads or writes that state (the rollout controller, the router, the CLI,
the steps) goes through `RegistryPort`. Two implementations obey the same contract
(tests/support/registry_contract.py runs one suite against both):

- `ferry.adapters.registry.Registry`: MLflow's model registry (the only code outside the steps that
  imports MLflow's client); it translates MLflow's errors into the ones below at its boundary;
- `ferry.adapters.registry_memory.MemoryRegistry`: in memory, for unit tests and anything that must run
  without a server.

Errors are ferry's (`RegistryError` and its kinds), never the backend's: a caller tells "not there"
(`NotFound`) from "cannot ask now" (`RegistryUnavailable`, retry later) without knowing MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ferry.contract import names
from ferry.contract.errors import FerryError
from ferry.stats.reference import Reference

REFERENCE_ARTIFACT = "ferry/reference.json"  # in the registering run's artifacts


class RegistryError(FerryError):
    """The registry refused a request (a bad alias name, a model that exists twice, ...); not transient."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, or failed on its side: nothing is known about the request's effect,
    and retrying is safe (every write of the port is idempotent)."""


class NotFound(RegistryError):
    """The registered model or the version does not exist."""


class NotServable(RegistryError):
    """A model version whose artifact is not a torch.export (pt2) program: serving refuses it."""


def reference_uri(run_id: str) -> str:
    """Where a run's drift reference lives; the URI its version's `ferry.reference` tag records."""
    return f"runs:/{run_id}/{REFERENCE_ARTIFACT}"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version. `version` is MLflow's number as text ("1", "2", ...), as aliases and
    Prometheus labels carry it; `created_at_s` is Unix seconds; `run_id` None when registered without one."""

    model: str
    version: str
    source: str
    run_id: str | None = None
    status: str = "READY"
    created_at_s: float = 0.0
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", dict(self.tags))  # a copy: never the store's own dict

    @property
    def number(self) -> int:
        return int(self.version)

    @property
    def rollout_state(self) -> str | None:
        return self.tags.get(names.TAG_ROLLOUT_STATE)

    @property
    def weight(self) -> int:
        return parse_weight(self.tags.get(names.TAG_ROLLOUT_WEIGHT))

    @property
    def shadow_sample(self) -> float:
        return parse_share(self.tags.get(names.TAG_ROLLOUT_SHADOW_SAMPLE))


@dataclass(frozen=True)
class RolloutView:
    """What the router reads from the registry: the alias versions, the challenger's weight (0-100) and the
    share of requests mirrored to the model that did not answer them (0-1)."""

    champion: str | None = None
    challenger: str | None = None
    weight: int = 0
    shadow_sample: float = 0.0


@dataclass(frozen=True)
class VersionFacts:
    """What monitoring reads about a version: its drift reference and when it was trained (Unix seconds);
    None where the version has none (registered before ferry recorded them, or by hand)."""

    reference: Reference | None = None
    trained_at_s: float | None = None


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


def parse_share(raw: object) -> float:
    """A share tag as a float in [0, 1]; missing or malformed reads as 0 (nothing mirrored)."""
    try:
        value = float(str(raw))
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if value != value else min(max(value, 0.0), 1.0)


def tag_text(tags: Mapping[str, object]) -> dict[str, str]:
    """Tags as the registry stores them: every value as text (a weight of 25 reads back as "25")."""
    return {key: str(value) for key, value in tags.items()}


class RegistryPort(Protocol):
    """The registry's primitives, plus the queries built on them (inherited by an implementation that
    subclasses this Protocol, so both implementations share their semantics: one weight parser, one
    notion of "the version of a workflow")."""

    def ensure_registered_model(self, model: str, owner: str) -> None:
        """Create the registered model (tagged with the model and its owner) unless it exists."""
        ...

    def register_version(self, model: str, source: str, run_id: str | None = None,
                         tags: Mapping[str, object] | None = None) -> ModelVersion:
        """A new version numbered one past the newest; NotFound when the registered model does not exist."""
        ...

    def version(self, model: str, version: str) -> ModelVersion:
        """The version; NotFound when it (or the model) does not exist."""
        ...

    def find_versions(self, model: str, tags: Mapping[str, str] | None = None) -> list[ModelVersion]:
        """The versions carrying every tag in `tags` (all versions without it), newest first; [] for an
        unknown model."""
        ...

    def aliases(self, model: str) -> dict[str, str]:
        """Alias → version of the registered model; {} when the model does not exist."""
        ...

    def alias(self, model: str, alias: str) -> ModelVersion | None:
        """The aliased version, None when the model or the alias does not exist. An unreachable registry
        raises: reading it as "no champion" would let a caller skip the comparison or the canary."""
        ...

    def set_alias(self, model: str, alias: str, version: str) -> None:
        """Point `alias` at `version` (moving it if set); NotFound when the version does not exist."""
        ...

    def delete_alias(self, model: str, alias: str) -> None:
        """Remove `alias`; nothing to do when it is not set. NotFound when the model does not exist."""
        ...

    def tag_version(self, model: str, version: str, tags: Mapping[str, object]) -> None:
        """Set tags on a version (values stored as text); NotFound when the version does not exist."""
        ...

    def log_reference(self, run_id: str, reference: Reference) -> str:
        """Store a drift reference with a run; returns the URI a version's `ferry.reference` tag records."""
        ...

    def version_facts(self, model: str, version: str) -> VersionFacts:
        """The version's drift reference (from the URI in its `ferry.reference` tag) and training time.
        Raises when the registry is unreachable or the reference is missing or malformed."""
        ...

    def load_pytorch_version(self, model: str, version: str) -> Any:
        """The version as a torch.export program; NotServable when it is anything else (never unpickled)."""
        ...

    def rollout_view(self, model: str) -> RolloutView:
        """Aliases and challenger weight. Raises when the registry cannot be read, so a caller can tell
        "no champion" (an empty view) from "registry down" (keep what it has)."""
        aliases = self.aliases(model)
        champion, challenger = aliases.get(names.ALIAS_CHAMPION), aliases.get(names.ALIAS_CHALLENGER)
        if challenger is None:
            return RolloutView(champion=champion)
        found = self.version(model, challenger)
        return RolloutView(champion=champion, challenger=challenger, weight=found.weight,
                           shadow_sample=found.shadow_sample)

    def version_for_workflow(self, model: str, workflow: str) -> ModelVersion | None:
        """The version a workflow registered (`ferry step register` tags it), if any."""
        found = self.find_versions(model, {names.TAG_WORKFLOW: workflow})
        return found[0] if found else None

    def versions_with_hash(self, model: str, spec_hash: str) -> list[ModelVersion]:
        """Versions trained from a spec with this hash (newest first)."""
        return self.find_versions(model, {names.TAG_SPEC_HASH: spec_hash})
