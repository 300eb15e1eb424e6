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
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import Schema, TensorSpec

from ferry.contract import names
from ferry.contract.errors import StepFailed
from ferry.stats.reference import Reference, build_reference, sample_rows, workload_feature_names
from ferry.steps.context import StepContext, git_commit
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
    scorer = _scorer(ctx, prepared)
    example = ctx.workload.input_example(prepared)
    reference = drift_reference(ctx.workload, prepared, scorer)
    trained_at = trained_at_tag(ctx.require_run(names.STEP_TRAIN).info.end_time)
    lineage = lineage_tags(ctx, evaluation)
    ctx.registry.ensure_registered_model(ctx.model, ctx.spec.metadata.owner)
    with ctx.mlflow_run() as run:
        info = mlflow.pytorch.log_model(scorer, name="model", input_example=example,
                                        signature=model_signature(example, example_outputs(scorer, example)),
                                        pip_requirements=_requirements(), serialization_format="pt2")
        recorded = {names.TAG_TRAINED_AT: trained_at, **lineage}
        if reference is not None:
            recorded[names.TAG_REFERENCE] = ctx.registry.log_reference(run.info.run_id, reference)
        version = mlflow.register_model(info.model_uri, names.registered_model_name(ctx.model),
                                        tags=version_tags(ctx, evaluation.data.metrics, prepared["dataset_digest"],
                                                          recorded))
    ctx.emit({names.OUTPUT_MODEL_VERSION: version.version, names.OUTPUT_MODEL_URI: _uri(ctx, version.version)})


def drift_reference(workload: Any, prepared: dict[str, Any], scorer: Any) -> Reference | None:
    """The workload's own drift reference when it declares one (`drift_reference(prepared, scorer)`, None for a
    model whose inputs are no feature rows: the recommender's user ids), else the training rows' reference."""
    own = getattr(workload, "drift_reference", None)
    return own(prepared, scorer) if own is not None else training_reference(workload, prepared, scorer)


def training_reference(workload: Any, prepared: dict[str, Any], scorer: Any) -> Reference:
    """Drift reference from the training rows (`x_train`, the protocol's name) and the scorer's scores on
    them: the live distribution the router compares against is the one the model learned from."""
    import numpy as np

    rows = sample_rows(np.asarray(prepared["x_train"], dtype=np.float32))
    return build_reference(rows, workload_feature_names(workload), example_outputs(scorer, rows).reshape(-1))


def trained_at_tag(end_time_ms: int | None) -> str:
    """When training finished (the train step run's end), RFC 3339 UTC; now if MLflow has no end time."""
    moment = datetime.now(UTC) if end_time_ms is None else datetime.fromtimestamp(end_time_ms / 1000, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _scorer(ctx: StepContext, prepared: dict[str, Any]) -> Any:
    """What is registered: the trained module, or what the workload's `scoring_module(model, prepared)` wraps it
    in (the recommender's scorer carries each user's history from the prepared data)."""
    model = candidate_model(ctx)
    to_scorer = getattr(ctx.workload, "scoring_module", None)
    return to_scorer(model, prepared) if to_scorer else model


def example_outputs(scorer: Any, example: Any) -> Any:
    """The scorer's output on the input example: an array, or a tuple of arrays for a module that takes or
    returns several tensors (the input example is then a tuple, one array per forward argument)."""
    import torch

    inputs = example if isinstance(example, tuple) else (example,)
    with torch.no_grad():
        out = scorer(*(torch.as_tensor(part) for part in inputs))
    return tuple(part.numpy() for part in out) if isinstance(out, tuple) else out.numpy()


def model_signature(example: Any, outputs: Any) -> ModelSignature:
    """MLflow's inferred signature for one array in and out; for tuples (which `infer_signature` does not take),
    one named tensor spec per array, with a free batch dimension."""
    if not isinstance(example, tuple) and not isinstance(outputs, tuple):
        return infer_signature(example, outputs)

    def schema(arrays: Any, prefix: str) -> Schema:
        parts = arrays if isinstance(arrays, tuple) else (arrays,)
        return Schema([TensorSpec(part.dtype, (-1, *part.shape[1:]), f"{prefix}{i}") for i, part in enumerate(parts)])

    return ModelSignature(inputs=schema(example, "input_"), outputs=schema(outputs, "output_"))


def _uri(ctx: StepContext, version: str) -> str:
    return f"models:/{names.registered_model_name(ctx.model)}/{version}"
