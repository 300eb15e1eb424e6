"""Dispatch `ferry step <name>` and map failures to exit codes the retryStrategy understands."""

from __future__ import annotations

from collections.abc import Callable

from ferry.settings import Settings
from ferry.steps import data, evaluate, register, rollout, train, tune
from ferry.steps.context import StepContext, StepFailed, TransientStepError, build_context

EXIT_OK, EXIT_FAILED, EXIT_TRANSIENT = 0, 1, 75
STEP_FUNCTIONS: dict[str, Callable[[StepContext], None]] = {
    "data": data.run, "tune": tune.run, "train": train.run,
    "evaluate": evaluate.run, "register": register.run, "rollout": rollout.run,
}


def run_step(step: str, spec_arg: str, workflow: str, expect_hash: str | None, settings: Settings) -> StepContext:
    ctx = build_context(step, spec_arg, workflow, expect_hash, settings)
    try:
        STEP_FUNCTIONS[step](ctx)
    except OSError as exc:
        # MLflow or Ray unreachable: worth a retry with backoff, not a red pipeline.
        raise TransientStepError(f"{step}: cannot reach a service ({exc}); will be retried") from exc
    return ctx


__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_TRANSIENT", "STEP_FUNCTIONS", "StepFailed", "run_step"]
