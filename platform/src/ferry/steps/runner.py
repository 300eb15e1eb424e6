"""Dispatch `ferry step <name>` and map failures to exit codes the retryStrategy understands."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from ferry.adapters.registry_port import RegistryUnavailable
from ferry.contract import names
from ferry.contract.names import EXIT_FAILED, EXIT_OK, EXIT_TRANSIENT
from ferry.settings import Settings
from ferry.steps import data, evaluate, register, rollout, train, tune
from ferry.steps.context import StepContext, StepFailed, TransientStepError, build_context

TIMING_PREFIX = "ferry.step.timing "
STEP_FUNCTIONS: dict[str, Callable[[StepContext], None]] = {
    names.STEP_DATA: data.run, names.STEP_TUNE: tune.run, names.STEP_TRAIN: train.run,
    names.STEP_EVALUATE: evaluate.run, names.STEP_REGISTER: register.run, names.STEP_ROLLOUT: rollout.run,
}


def run_step(step: str, spec_arg: str, workflow: str, expect_hash: str | None, settings: Settings) -> StepContext:
    started = time.perf_counter()
    ctx = build_context(step, spec_arg, workflow, expect_hash, settings)
    try:
        STEP_FUNCTIONS[step](ctx)
    except (OSError, RegistryUnavailable) as exc:
        # MLflow or Ray unreachable: worth a retry with backoff, not a red pipeline.
        raise TransientStepError(f"{step}: cannot reach a service ({exc}); will be retried") from exc
    # One parseable line per step in its log: benchmarks split wall time into step work and overhead.
    print(f"{TIMING_PREFIX}{json.dumps({'step': step, 'work_s': round(time.perf_counter() - started, 3)})}")
    return ctx


__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_TRANSIENT", "STEP_FUNCTIONS", "StepFailed", "run_step"]
