"""`ferry lineage MODEL[@VERSION]`: where a registered version comes from (`ferry.rollout.lineage`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ferry.cli.output import FitTable, console
from ferry.settings import load_settings

if TYPE_CHECKING:
    from ferry.adapters.registry_port import RegistryPort


def _registry() -> RegistryPort:
    from ferry.adapters.registry import Registry

    return Registry(load_settings().mlflow_uri)


def lineage(ref: Annotated[str, typer.Argument(
        help="MODEL (its champion) or MODEL@VERSION, where VERSION is a number or an alias.")]) -> None:
    """What made a version: pipeline run, spec hash, commit, image, data (source, window, rows, digest), metrics, and
    its parents: the champion it was evaluated against, that one's, and so on."""
    from ferry.rollout.lineage import lineage as read_lineage
    from ferry.rollout.lineage import parse_ref

    model, version = parse_ref(ref)
    found = read_lineage(_registry(), model, version)
    aliases = f" ({', '.join(found.aliases)})" if found.aliases else ""
    console.print(f"{found.model} v{found.version}{aliases}", markup=False)
    table = FitTable("what", "value")
    for what, value in found.facts:
        table.add_row(what, value or "- (not recorded)")
    for metric, value in found.metrics:
        table.add_row(f"metric {metric}", value)
    console.print(table)
    chain = " <- ".join(f"v{v}" for v in (found.version, *found.ancestors))
    console.print(f"parents (the champion each was evaluated against): {chain}" if found.ancestors
                  else "no parent: there was no champion when it was evaluated", markup=False)
