"""`ferry step evaluate`: the workload's metrics on the test set, the gates, and the champion comparison.

The champion is scored on the same test set as the candidate, so a data change can't make a worse
model look better than the one serving.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts

from ferry.contract import names
from ferry.spec.models import EvaluationSpec
from ferry.steps.context import StepContext
from ferry.steps.data import load_prepared
from ferry.steps.train import CHECKPOINT_ARTIFACT


def candidate_model(ctx: StepContext) -> Any:
    train_run = ctx.require_run(names.STEP_TRAIN)
    with tempfile.TemporaryDirectory() as tmp:
        folder = mlflow.artifacts.download_artifacts(run_id=train_run.info.run_id, artifact_path=CHECKPOINT_ARTIFACT,
                                                     dst_path=tmp, tracking_uri=ctx.registry.uri)
        return ctx.workload.load_checkpoint(Path(folder))


def champion_scores(ctx: StepContext, prepared: dict[str, Any]) -> tuple[str | None, Any]:
    """The champion's version and scores on the test rows; (None, None) without a champion, or for a workload
    whose registered model does not take test rows (`WorkloadFacts.scores_test_rows`)."""
    champion = ctx.registry.alias(ctx.model, names.ALIAS_CHAMPION)
    if champion is None or not ctx.workload.facts.scores_test_rows:
        return None, None
    program = ctx.registry.load_pytorch_version(ctx.model, str(champion.version))
    return str(champion.version), score_exported(program, prepared["x_test"])


def score_exported(program: Any, features: Any) -> Any:
    """Scores of a registered (torch.export) model: it outputs probabilities and is frozen (no .eval())."""
    import numpy as np
    import torch

    with torch.inference_mode():
        return program(torch.as_tensor(np.asarray(features, dtype=np.float32))).cpu().numpy().reshape(-1)


def judge(spec: EvaluationSpec, metrics: dict[str, float], champion: dict[str, float] | None) -> tuple[bool, str]:
    """Pure: pass only when every gate holds and, if asked, the champion is beaten on the same data."""
    for gate in spec.gates:
        value = metrics.get(gate.metric, math.nan)
        if math.isnan(value) or (gate.min is not None and value < gate.min) or (
                gate.max is not None and value > gate.max):
            return False, f"gate {gate.metric}={value:.4f} outside [{gate.min}, {gate.max}]"
    beat = spec.beat_champion
    if beat and champion is not None:
        ours, theirs = metrics.get(beat.metric, math.nan), champion.get(beat.metric, math.nan)
        if not ours >= theirs + beat.min_delta:
            return False, f"{beat.metric} {ours:.4f} does not beat the champion's {theirs:.4f} + {beat.min_delta}"
    return True, "all gates passed" + (" and the champion is beaten" if champion and beat else "")


def run(ctx: StepContext) -> None:
    done = ctx.finished_run()
    if done is not None:
        ctx.emit(_outputs(ctx, done.info.run_id, done.data.metrics, done.data.tags))
        return
    trained_by = ctx.require_run(names.STEP_DATA).data.tags.get(names.TAG_DATASET_TRAINED_BY, ctx.workflow)
    if trained_by != ctx.workflow:
        _record_verdict(ctx, {}, already_trained(ctx, trained_by))
        return
    prepared = load_prepared(ctx)
    scores = ctx.workload.predict_batch(candidate_model(ctx), prepared["x_test"])
    metrics = ctx.workload.evaluate(prepared, scores)
    champion_version, champion_raw = champion_scores(ctx, prepared)
    champion = ctx.workload.evaluate(prepared, champion_raw) if champion_raw is not None else None
    passed, reason = judge(ctx.spec.spec.evaluation, metrics, champion)
    _record_verdict(ctx, metrics, (passed, reason), champion, champion_version)


def _record_verdict(ctx: StepContext, metrics: dict[str, float], verdict: tuple[bool, str],
                    champion: dict[str, float] | None = None, champion_version: str | None = None) -> None:
    with ctx.mlflow_run() as run:
        mlflow.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)})
        if champion:
            mlflow.log_metrics({f"champion_{k}": v for k, v in champion.items() if not math.isnan(v)})
            mlflow.set_tag(names.TAG_EVALUATE_CHAMPION_VERSION, champion_version or "")
        tags = {names.TAG_EVALUATE_PASSED: str(verdict[0]).lower(), names.TAG_EVALUATE_REASON: verdict[1]}
        mlflow.set_tags(tags)
        ctx.emit(_outputs(ctx, run.info.run_id, metrics, tags))


def already_trained(ctx: StepContext, trained_by: str) -> tuple[bool, str]:
    """The verdict of a run whose spec hash and dataset an earlier workflow trained on: nothing to register."""
    found = ctx.registry.version_for_workflow(ctx.model, trained_by)
    outcome = f"it registered version {found.version}" if found is not None else "it registered nothing"
    return False, (f"{trained_by} already trained this spec on this dataset ({outcome}); nothing new to train on: "
                   "retraining waits for a new data window")


def _outputs(ctx: StepContext, run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {names.OUTPUT_MLFLOW_RUN: run_id,
                              names.OUTPUT_PASSED: tags.get(names.TAG_EVALUATE_PASSED, "false"),
                              names.OUTPUT_REASON: tags.get(names.TAG_EVALUATE_REASON, "")}
    values.update({names.metric_output(metric): metrics.get(metric, math.nan)
                   for metric in ctx.spec.spec.evaluation.judged()})
    return values
