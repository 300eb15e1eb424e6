"""`ferry plan --preview`: train both sides of each model whose training a change touches, on a small sample.

What is judged and how is ferry.plan.preview. Here the training: per side, the workload's sample of the spec's
data (`preview_data`), its features and split, then `fit_in_process` with the spec's `training.params` for
min(epochs, MAX_EPOCHS) epochs and each of SEEDS, scored on the sample's test period and averaged over the
seeds (the same seeds on both sides, so a change is compared with itself, not with luck). No Ray, no MLflow:
a pull request's check needs only the ML stack and the data. A budget bounds the whole preview; a side that
would start past it is reported as failed rather than run.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ferry.adapters.workloads import load_workload
from ferry.contract.errors import FerryError
from ferry.plan import Plan
from ferry.plan.preview import Preview, SideResult
from ferry.spec.models import ModelSpec

MAX_EPOCHS = 10
SEEDS = (0, 1, 2)
PREVIEWED_ACTIONS = ("new", "retrain")
PREVIEW_HOOKS = ("preview_data", "fit_in_process")


class PreviewUnavailable(FerryError):
    """This side cannot be previewed (the workload lacks the hooks, the data cannot be sampled, the budget)."""


def preview_plan(plan: Plan, base: Mapping[str, ModelSpec], head: Mapping[str, ModelSpec], data_root: Path,
                 tolerance: float, budget_s: float, on_model: Callable[[str], None] = lambda name: None) -> Plan:
    """`plan` with a preview for every model it trains anew (`new` or `retrain`), in plan order."""
    deadline = time.monotonic() + budget_s
    for change in plan.models:
        if change.action in PREVIEWED_ACTIONS:
            on_model(change.name)
            plan.previews.append(preview_model(base.get(change.name), head[change.name], data_root, tolerance,
                                               deadline))
    return plan


def preview_model(base: ModelSpec | None, head: ModelSpec, data_root: Path, tolerance: float,
                  deadline: float) -> Preview:
    judged = head.spec.evaluation.judged() or ((head.spec.training.tune.metric,) if head.spec.training.tune else ())
    empty = Preview(head.metadata.name, judged, tolerance, min(head.spec.training.epochs, MAX_EPOCHS), len(SEEDS))
    try:
        head_result = train_side(head, data_root, deadline)
        base_result = train_side(base, data_root, deadline) if base is not None else None
    except PreviewUnavailable as exc:
        return replace(empty, error=str(exc))
    except Exception as exc:  # a spec that cannot train is the check's finding, not a crash of the plan
        return replace(empty, error=f"{type(exc).__name__}: {exc}")
    return replace(empty, head=head_result, base=base_result)


def train_side(spec: ModelSpec, data_root: Path, deadline: float) -> SideResult:
    started = time.monotonic()
    workload: Any = load_workload(spec.spec.workload)
    if not all(hasattr(workload, hook) for hook in PREVIEW_HOOKS):
        raise PreviewUnavailable(f"workload {spec.spec.workload!r} declares no preview ({', '.join(PREVIEW_HOOKS)})")
    if spec.spec.data.source == "log":
        raise PreviewUnavailable("data.source 'log' is what serving logged on a cluster: a pull request has no "
                                 "sample of it")
    data = workload.preview_data(spec.spec.data)
    frame = workload.featurize(workload.load_data(data, data_root), data)
    prepared = workload.prepare(frame, data)
    training = spec.spec.training
    runs = []
    for seed in SEEDS:
        if time.monotonic() > deadline:
            raise PreviewUnavailable(f"{spec.metadata.name}: over the preview's time budget before seed {seed}")
        model = workload.fit_in_process(prepared, training.params, min(training.epochs, MAX_EPOCHS),
                                        training.batch_size, seed)
        runs.append(workload.evaluate(prepared, workload.predict_batch(model, prepared["x_test"])))
    metrics = {name: statistics.fmean([run.get(name, math.nan) for run in runs]) for name in runs[0]}
    return SideResult(metrics, len(frame), round(time.monotonic() - started, 1))
