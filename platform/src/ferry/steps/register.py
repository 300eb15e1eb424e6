"""`ferry step register`: log the model (pt2, signature, input example, requirements) and register it once.

A rerun finds the version already tagged with this workflow and registers nothing new. Besides the model,
the version gets what monitoring needs: its drift reference (decile histograms of the training features
and of the model's scores on them, `ferry.stats.reference`) and the time its training finished.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import mlflow
import mlflow.pytorch
from mlflow.models import infer_signature

from ferry.contract import names
from ferry.stats.reference import Reference, build_reference, sample_rows, workload_feature_names
from ferry.steps.context import StepContext, StepFailed, git_commit
from ferry.steps.data import load_prepared
from ferry.steps.evaluate import candidate_model


def _requirements() -> list[str]:
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", "numpy"]


def version_tags(ctx: StepContext, evaluate_metrics: dict[str, float], digest: str,
                 recorded: dict[str, str] | None = None) -> dict[str, str]:
    tags = {names.TAG_WORKFLOW: ctx.workflow, names.TAG_SPEC_HASH: ctx.spec_hash, names.TAG_MODEL: ctx.model,
            names.TAG_GIT_COMMIT: git_commit(ctx.settings), names.TAG_DATASET_DIGEST: digest,
            names.TAG_ROLLOUT_STATE: names.STATE_REGISTERED, names.TAG_ROLLOUT_WEIGHT: "0", **(recorded or {})}
    tags.update({f"{names.TAG_METRIC_PREFIX}{k}": f"{v:.6g}" for k, v in evaluate_metrics.items()})
    return tags


def lineage_tags(ctx: StepContext, evaluation: Any) -> dict[str, str]:
    """Where the version comes from, beyond the spec hash, commit and data digest: the champion it was
    evaluated against (empty for a first version), the image this step runs in (empty outside a container)
    and the data step's run, source, row count and (for `source: log`) event-time window."""
    data = ctx.require_run(names.STEP_DATA)
    source = ctx.spec.spec.data.source
    path = ctx.spec.spec.data.path
    return {names.TAG_LINEAGE_PARENT: evaluation.data.tags.get(names.TAG_EVALUATE_CHAMPION_VERSION, ""),
            names.TAG_LINEAGE_IMAGE: ctx.settings.image or "",
            names.TAG_LINEAGE_DATA_RUN: data.info.run_id,
            names.TAG_LINEAGE_DATA_SOURCE: f"{source}:{path}" if path else source,
            names.TAG_LINEAGE_DATA_ROWS: data.data.params.get("rows", ""),
            names.TAG_LINEAGE_DATA_WINDOW: data.data.tags.get(names.TAG_DATASET_WINDOW, "")}


def run(ctx: StepContext) -> None:
    existing = ctx.registry.version_for_workflow(ctx.model, ctx.workflow)
    if existing is not None:
        ctx.emit({names.OUTPUT_MODEL_VERSION: existing.version, names.OUTPUT_MODEL_URI: _uri(ctx, existing.version)})
        return
    evaluation = ctx.require_run(names.STEP_EVALUATE)
    if evaluation.data.tags.get(names.TAG_EVALUATE_PASSED) != "true":
        raise StepFailed(f"evaluation did not pass ({evaluation.data.tags.get(names.TAG_EVALUATE_REASON)}); "
                         "nothing to register")
    prepared = load_prepared(ctx)
    scorer = _scorer(ctx)
    example = ctx.workload.input_example(prepared)
    reference = training_reference(ctx.workload, prepared, scorer)
    trained_at = trained_at_tag(ctx.require_run(names.STEP_TRAIN).info.end_time)
    lineage = lineage_tags(ctx, evaluation)
    ctx.registry.ensure_registered_model(ctx.model, ctx.spec.metadata.owner)
    with ctx.mlflow_run() as run:
        info = mlflow.pytorch.log_model(scorer, name="model", input_example=example,
                                        signature=infer_signature(example, _outputs(scorer, example)),
                                        pip_requirements=_requirements(), serialization_format="pt2")
        recorded = {names.TAG_REFERENCE: ctx.registry.log_reference(run.info.run_id, reference),
                    names.TAG_TRAINED_AT: trained_at, **lineage}
        version = mlflow.register_model(info.model_uri, names.registered_model_name(ctx.model),
                                        tags=version_tags(ctx, evaluation.data.metrics, prepared["dataset_digest"],
                                                          recorded))
    ctx.emit({names.OUTPUT_MODEL_VERSION: version.version, names.OUTPUT_MODEL_URI: _uri(ctx, version.version)})


def training_reference(workload: Any, prepared: dict[str, Any], scorer: Any) -> Reference:
    """Drift reference from the training rows (`x_train`, the protocol's name) and the scorer's scores on
    them: the live distribution the router compares against is the one the model learned from."""
    import numpy as np

    rows = sample_rows(np.asarray(prepared["x_train"], dtype=np.float32))
    return build_reference(rows, workload_feature_names(workload), _outputs(scorer, rows).reshape(-1))


def trained_at_tag(end_time_ms: int | None) -> str:
    """When training finished (the train step run's end), RFC 3339 UTC; now if MLflow has no end time."""
    moment = datetime.now(UTC) if end_time_ms is None else datetime.fromtimestamp(end_time_ms / 1000, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _scorer(ctx: StepContext) -> Any:
    model = candidate_model(ctx)
    to_scorer = getattr(ctx.workload, "scoring_module", None)
    return to_scorer(model) if to_scorer else model


def _outputs(scorer: Any, example: Any) -> Any:
    import torch

    with torch.no_grad():
        return scorer(torch.as_tensor(example)).numpy()


def _uri(ctx: StepContext, version: str) -> str:
    return f"models:/{names.registered_model_name(ctx.model)}/{version}"
