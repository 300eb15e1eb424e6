"""`ferry lineage MODEL[@VERSION]`: where a registered version comes from, read from its registry tags.

A version carries what made it (set at register, `ferry.steps.register`): the pipeline run, the spec hash and
git commit, the image the step ran in, the data step's run, source, rows and dataset digest, the evaluation's
metrics and the champion it was evaluated against. That champion is its parent; following parents gives the
chain of models each one replaced. A version registered before ferry recorded a fact shows it as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.adapters.registry_port import ModelVersion, NotFound, RegistryPort
from ferry.contract import names

MAX_ANCESTORS = 20  # a chain longer than this is cut: enough to read, bounded against a tag cycle


@dataclass(frozen=True)
class Lineage:
    model: str
    version: str
    aliases: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]  # (what, value) in print order; value "" when not recorded
    metrics: tuple[tuple[str, str], ...]  # the evaluation's, as registered
    ancestors: tuple[str, ...]  # parent, grandparent, ...: each the champion its child was evaluated against


# (what, tag) in the order a person reads them: what made it, then what it learned from.
FACTS = (
    ("rollout state", names.TAG_ROLLOUT_STATE),
    ("pipeline run", names.TAG_WORKFLOW),
    ("spec hash", names.TAG_SPEC_HASH),
    ("git commit", names.TAG_GIT_COMMIT),
    ("image", names.TAG_LINEAGE_IMAGE),
    ("trained at", names.TAG_TRAINED_AT),
    ("data source", names.TAG_LINEAGE_DATA_SOURCE),
    ("data window (event time)", names.TAG_LINEAGE_DATA_WINDOW),
    ("data rows", names.TAG_LINEAGE_DATA_ROWS),
    ("dataset digest", names.TAG_DATASET_DIGEST),
    ("data run (MLflow)", names.TAG_LINEAGE_DATA_RUN),
    ("parent (champion it was evaluated against)", names.TAG_LINEAGE_PARENT),
)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`MODEL` or `MODEL@VERSION` (a number or an alias such as `champion`)."""
    model, _, version = ref.partition("@")
    return model, version or None


def lineage(registry: RegistryPort, model: str, version: str | None = None) -> Lineage:
    """The lineage of `version` (a number or an alias; default the champion). NotFound names what is missing."""
    found = _resolve(registry, model, version or names.ALIAS_CHAMPION)
    tags = found.tags
    facts = tuple((what, tags.get(tag, "")) for what, tag in FACTS)
    metrics = tuple(sorted((key.removeprefix(names.TAG_METRIC_PREFIX), value) for key, value in tags.items()
                           if key.startswith(names.TAG_METRIC_PREFIX)))
    return Lineage(model, found.version, found.aliases, facts, metrics, _ancestors(registry, model, found))


def _resolve(registry: RegistryPort, model: str, version: str) -> ModelVersion:
    if version.isdigit():
        return registry.version(model, version)
    found = registry.alias(model, version)
    if found is None:
        aliases = ", ".join(sorted(registry.aliases(model))) or "none"
        raise NotFound(f"{model} has no version with alias {version!r} (aliases: {aliases}); "
                       f"name a version number, e.g. {model}@1")
    return found


def _ancestors(registry: RegistryPort, model: str, version: ModelVersion) -> tuple[str, ...]:
    chain: list[str] = []
    parent = version.tags.get(names.TAG_LINEAGE_PARENT, "")
    while parent and parent != version.version and parent not in chain and len(chain) < MAX_ANCESTORS:
        chain.append(parent)
        try:
            parent = registry.version(model, parent).tags.get(names.TAG_LINEAGE_PARENT, "")
        except NotFound:  # deleted since: the chain ends with its number
            break
    return tuple(chain)
