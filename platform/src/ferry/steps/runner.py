"""Dispatch `ferry step <name>` and map failures to exit codes the retryStrategy understands."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable

from ferry.adapters.registry_port import RegistryUnavailable
from ferry.contract import names
from ferry.contract.errors import StepFailed, TransientStepError
from ferry.contract.names import EXIT_FAILED, EXIT_OK, EXIT_TRANSIENT
from ferry.settings import Settings
from ferry.steps.context import StepContext, build_context

TIMING_PREFIX = "ferry.step.timing "
# Each step process imports only its own step's module: importing all six cost every step ~3 s of CPU (torch
# through mlflow.pytorch, which only `register` needs), more than the whole work of data, evaluate or rollout.
STEP_MODULES: dict[str, str] = {
    names.STEP_DATA: "ferry.steps.data", names.STEP_TUNE: "ferry.steps.tune", names.STEP_TRAIN: "ferry.steps.train",
    names.STEP_EVALUATE: "ferry.steps.evaluate", names.STEP_REGISTER: "ferry.steps.register",
    names.STEP_ROLLOUT: "ferry.steps.rollout",
}


def step_function(step: str) -> Callable[[StepContext], None]:
    function: Callable[[StepContext], None] = importlib.import_module(STEP_MODULES[step]).run
    return function


def run_step(step: str, spec_arg: str, workflow: str, expect_hash: str | None, settings: Settings) -> StepContext:
    function = step_function(step)  # its imports are start-up, not the step's work
    started = time.perf_counter()
    ctx = build_context(step, spec_arg, workflow, expect_hash, settings)
    try:
        function(ctx)
    except (OSError, RegistryUnavailable) as exc:
        # MLflow or Ray unreachable: worth a retry with backoff, not a red pipeline.
        raise TransientStepError(f"{step}: cannot reach a service ({exc}); will be retried") from exc
    # One parseable line per step in its log: benchmarks split wall time into step work and overhead.
    work_s = round(time.perf_counter() - started, 3)
    print(f"{TIMING_PREFIX}{json.dumps({'step': step, 'work_s': work_s, 'finished_unix': round(time.time(), 3)})}")
    return ctx


__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_TRANSIENT", "STEP_MODULES", "StepFailed", "run_step", "step_function"]
