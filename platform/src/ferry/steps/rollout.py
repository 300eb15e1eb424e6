"""`ferry step rollout`: the last step. A first version is promoted directly.

Later versions become the challenger at weight 0; walking the weight steps against Prometheus
(the canary controller) belongs to the serving issue and reads the same registry state.
"""

from __future__ import annotations

from ferry.render import names
from ferry.steps.context import StepContext


def run(ctx: StepContext) -> None:
    version = ctx.registry.version_for_workflow(ctx.model, ctx.workflow)
    if version is None:
        ctx.emit({"decision": "nothing-registered"})
        return
    champion = ctx.registry.alias(ctx.model, names.ALIAS_CHAMPION)
    if champion is not None and champion.version == version.version:
        ctx.emit({"decision": "promoted"})
        return
    if champion is None:
        ctx.registry.set_alias(ctx.model, names.ALIAS_CHAMPION, version.version)
        ctx.registry.tag_version(ctx.model, version.version, {names.TAG_ROLLOUT_STATE: "promoted",
                                                              names.TAG_ROLLOUT_WEIGHT: "100",
                                                              names.TAG_ROLLOUT_REASON: "first version"})
        ctx.emit({"decision": "promoted"})
        return
    ctx.registry.set_alias(ctx.model, names.ALIAS_CHALLENGER, version.version)
    ctx.registry.tag_version(ctx.model, version.version, {names.TAG_ROLLOUT_STATE: "challenger",
                                                          names.TAG_ROLLOUT_WEIGHT: "0"})
    ctx.emit({"decision": "challenger"})
