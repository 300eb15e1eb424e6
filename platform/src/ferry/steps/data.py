"""`ferry step data`: generate or load the dataset, add features, log it (with its digest) to MLflow."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.data

from ferry.contract import names
from ferry.steps.context import StepContext, StepFailed
from ferry.steps.params import data_params

DATASET_ARTIFACT = "dataset"
DATASET_FILE = "features.parquet"


def run(ctx: StepContext) -> None:
    done = ctx.finished_run()
    if done is not None:
        ctx.emit({names.OUTPUT_MLFLOW_RUN: done.info.run_id,
                  names.OUTPUT_DATASET_DIGEST: done.data.tags.get(names.TAG_DATASET_DIGEST, ""),
                  names.OUTPUT_ROWS: done.data.params.get("rows", "")})
        return
    data = ctx.spec.spec.data
    params = data_params(ctx)
    try:
        frame = ctx.workload.load_data(data, ctx.settings.data_dir)
        featured = ctx.workload.featurize(frame, data)
    except (ValueError, FileNotFoundError) as exc:
        raise StepFailed(f"cannot build the dataset: {exc}") from None
    digest = ctx.workload.dataset_digest(frame)
    with ctx.mlflow_run() as run, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / DATASET_FILE
        featured.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), DATASET_ARTIFACT)
        dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
            featured.head(1000), source=data.source, name=ctx.model, digest=digest)
        mlflow.log_input(dataset, context="training")
        mlflow.log_params({"rows": len(featured), "source": data.source, **params.model_dump(exclude_unset=True)})
        mlflow.set_tag(names.TAG_DATASET_DIGEST, digest)
        ctx.emit({names.OUTPUT_MLFLOW_RUN: run.info.run_id, names.OUTPUT_DATASET_DIGEST: digest,
                  names.OUTPUT_ROWS: len(featured)})


def load_prepared(ctx: StepContext) -> dict[str, Any]:
    """The data step's features, split as the workload defines: what tune, train and evaluate use."""
    import pandas as pd

    data_run = ctx.require_run(names.STEP_DATA)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=data_run.info.run_id,
                                                    artifact_path=f"{DATASET_ARTIFACT}/{DATASET_FILE}",
                                                    dst_path=tmp, tracking_uri=ctx.registry.uri)
        frame = pd.read_parquet(local)
    try:
        prepared = ctx.workload.prepare(frame, ctx.spec.spec.data)
    except ValueError as exc:
        raise StepFailed(f"cannot split the dataset: {exc}") from None
    prepared["dataset_digest"] = data_run.data.tags.get(names.TAG_DATASET_DIGEST, "")
    return prepared
