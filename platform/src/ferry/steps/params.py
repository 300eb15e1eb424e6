"""The spec's workload params, validated with the workload's own models before a step hands them on.

`ferry validate` has checked them already; this catches a spec rendered against another version of the
workload before Ray starts, with the field named, instead of inside a worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ferry.contract.errors import StepFailed
from ferry.steps.context import StepContext


def data_params(ctx: StepContext) -> BaseModel:
    return _validated(ctx, "data.params", ctx.workload.facts.data_params, ctx.spec.spec.data.params)


def training_params(ctx: StepContext, values: Mapping[str, Any]) -> BaseModel:
    """`values` (the spec's training params, possibly overlaid with Tune's best) as the workload's model."""
    return _validated(ctx, "training.params", ctx.workload.facts.training_params, values)


def _validated(ctx: StepContext, where: str, model: type[BaseModel], values: Mapping[str, Any]) -> BaseModel:
    try:
        # Lax: values that went through MLflow or Tune may be typed loosely; the spec was checked strictly.
        return model.model_validate(dict(values), strict=False)
    except ValidationError as exc:
        problems = "; ".join(f"spec.{where}.{'.'.join(map(str, err['loc']))}: {err['msg']}"
                             for err in exc.errors(include_url=False))
        raise StepFailed(f"workload {ctx.workload.name!r} refuses the spec's {where}: {problems} "
                         "(run `ferry validate` against the installed workload)") from None
