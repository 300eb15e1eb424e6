"""The registry writes that end a rollout, shared by the controller and `ferry rollout promote|abort`.

Promotion sets `champion` before removing `challenger`, so at every instant the router sees a consistent
pair; a rollback sets the weight to 0 before removing the alias, so the router stops sending traffic
even if the second write fails. `write` wraps each call (the controller passes its retry loop).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ferry.adapters.registry_port import RegistryPort, RolloutView
from ferry.contract import names
from ferry.contract.errors import FerryError
from ferry.rollout.policy import Action

Write = Callable[..., Any]


def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class NoChallenger(FerryError):
    """`ferry rollout promote|abort` on a model whose canary is not running."""


def promote(registry: RegistryPort, model: str, version: str, old: str | None, reason: str,
            write: Write = _direct) -> None:
    write(registry.set_alias, model, names.ALIAS_CHAMPION, version)
    write(registry.delete_alias, model, names.ALIAS_CHALLENGER)
    write(registry.tag_version, model, version, {
        names.TAG_ROLLOUT_STATE: names.STATE_PROMOTED, names.TAG_ROLLOUT_WEIGHT: 100, names.TAG_ROLLOUT_REASON: reason})
    if old is not None and old != version:
        write(registry.tag_version, model, old, {names.TAG_ROLLOUT_STATE: names.STATE_RETIRED})


def rollback(registry: RegistryPort, model: str, version: str, reason: str, write: Write = _direct) -> None:
    write(registry.tag_version, model, version, {names.TAG_ROLLOUT_WEIGHT: 0})
    write(registry.delete_alias, model, names.ALIAS_CHALLENGER)
    write(registry.tag_version, model, version,
          {names.TAG_ROLLOUT_STATE: names.STATE_ROLLED_BACK, names.TAG_ROLLOUT_REASON: reason})


def partial_state(action: Action, model: str, version: str, old: str | None, landed: int) -> str:
    """Where the aliases stand when only the first `landed` writes of promote or rollback went through (in
    the order above), and how a person finishes the job."""
    if action is Action.PROMOTE:
        if old is None and landed == 0:
            return (f"Nothing was changed (v{version} is not champion yet): rerun `ferry step rollout` once "
                    f"MLflow is reachable.")
        if landed == 0:
            return (f"Nothing was changed: champion v{old}, challenger v{version} at its last weight. Finish by "
                    f"hand with `ferry rollout promote {model}` (or `ferry rollout abort {model}`).")
        if landed == 1:
            return (f"The champion alias already points at v{version}, and so does the challenger alias: "
                    f"v{version} serves all traffic. Finish by hand with `ferry rollout promote {model}`.")
        return (f"The aliases are final (champion v{version}, no challenger); only the rollout tags of "
                f"v{version} are not all written: `ferry rollout status {model}` may show them stale.")
    if landed == 0:
        return (f"Nothing was changed: challenger v{version} still takes its last weight next to champion "
                f"v{old}. Finish by hand with `ferry rollout abort {model}`.")
    if landed == 1:
        return (f"v{version}'s weight is 0 (it takes no traffic) but the challenger alias still points at it. "
                f"Finish by hand with `ferry rollout abort {model}`.")
    return (f"The aliases are final (no challenger, champion v{old} serves all traffic); only v{version}'s "
            f"rolled-back state tag is not written: `ferry rollout status {model}` may show it stale.")


def by_hand(registry: RegistryPort, model: str, action: Action) -> RolloutView:
    """A person's promote or abort of the current challenger; the view as it was before."""
    view = registry.rollout_view(model)
    if view.challenger is None:
        verb = "promote" if action is Action.PROMOTE else "abort"
        raise NoChallenger(f"{model} has no challenger to {verb}")
    if action is Action.PROMOTE:
        promote(registry, model, view.challenger, view.champion, "promoted by hand")
    elif action is Action.ROLLBACK:
        rollback(registry, model, view.challenger, "aborted by hand")
    else:
        raise ValueError(f"a person can promote or roll back, not {action.value}")
    return view


@dataclass(frozen=True)
class RolloutStatus:
    """What `ferry rollout status` shows: the aliases, one version's rollout tags and its recorded checks."""

    view: RolloutView
    version: str | None
    state: str = "-"
    reason: str = "-"
    weight: str = "-"
    checks: tuple[tuple[str, dict[str, Any]], ...] = ()


def status(registry: RegistryPort, model: str, version: str | None = None) -> RolloutStatus:
    """The rollout of `version`; by default the challenger's, else the newest version that had one (a
    rolled-back version is neither champion nor challenger, and it is the one on-call asks about).
    NotFound when `version` is given and does not exist."""
    view = registry.rollout_view(model)
    if version is None:
        version = view.challenger or _latest_rollout(registry, model) or view.champion
    if version is None:
        return RolloutStatus(view, None)
    tags = registry.version(model, version).tags
    checks = tuple((key.rsplit(".", 1)[-1], _record(value)) for key, value in sorted(tags.items())
                   if key.startswith(names.TAG_ROLLOUT_CHECK_PREFIX))
    return RolloutStatus(view, version, tags.get(names.TAG_ROLLOUT_STATE, "-"),
                         tags.get(names.TAG_ROLLOUT_REASON, "-"), tags.get(names.TAG_ROLLOUT_WEIGHT, "-"), checks)


def _latest_rollout(registry: RegistryPort, model: str) -> str | None:
    return next((v.version for v in registry.find_versions(model) if v.rollout_state is not None), None)


def _record(raw: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError:
        return {"reason": raw}
    return record if isinstance(record, dict) else {"reason": raw}
