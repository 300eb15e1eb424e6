"""`ferry step data`: build the dataset (simulate, read a file, or read a window of served traffic), add features,
and record it in MLflow as a content-addressed Parquet snapshot.

The snapshot's address is the featured dataset's digest: a data run whose digest an earlier run already stored
points at that run's artifact instead of writing it again (`TAG_DATASET_SNAPSHOT_RUN`), so an unchanged log window
or spec is stored once however often it is retrained on. Each run records the dataset as its MLflow dataset input
(digest, source, and for a log window its dates and row and label counts), which `ferry lineage` prints.

A run's identity is its spec hash plus its dataset digest: when an earlier workflow already trained and evaluated
this spec on this dataset (a second drift alert on the same window, a schedule that fires before new labels came
back), the data step says so (`fresh` false, TAG_DATASET_TRAINED_BY names that workflow), the Workflow skips tune
and train, and evaluate passes nothing on to register.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.data

from ferry.contract import names
from ferry.contract.errors import StepFailed
from ferry.spec.models import DataSpec
from ferry.steps.context import StepContext
from ferry.steps.log_window import WindowRows, WindowUnavailable, read_window
from ferry.steps.params import data_params

DATASET_ARTIFACT = "dataset"
DATASET_FILE = "features.parquet"


@dataclass(frozen=True)
class Built:
    featured: Any
    source: str  # what the dataset input names as its source: "simulator", a data path, the log's URI
    window: WindowRows | None


def run(ctx: StepContext) -> None:
    done = ctx.finished_run()
    if done is not None:
        ctx.emit({names.OUTPUT_MLFLOW_RUN: done.info.run_id,
                  names.OUTPUT_DATASET_DIGEST: done.data.tags.get(names.TAG_DATASET_DIGEST, ""),
                  names.OUTPUT_ROWS: done.data.params.get("rows", ""),
                  names.OUTPUT_FRESH: done.data.tags.get(names.TAG_DATASET_TRAINED_BY, ctx.workflow) == ctx.workflow})
        return
    params = data_params(ctx)
    built = build(ctx)
    digest = ctx.workload.dataset_digest(built.featured)
    stored = ctx.registry.snapshot_run(ctx.model, digest)
    earlier = ctx.registry.trained_on(ctx.model, ctx.spec_hash, digest, ctx.workflow)
    trainer = earlier.data.tags[names.TAG_WORKFLOW] if earlier is not None else ctx.workflow
    with ctx.mlflow_run() as run:
        if stored is None:
            _write_snapshot(built.featured)
        with warnings.catch_warnings():  # MLflow registers its local source twice, then warns it is ambiguous
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted", UserWarning)
            dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
                built.featured, source=built.source, name=ctx.model, digest=digest)
        tags = {names.TAG_DATASET_DIGEST: digest, names.TAG_DATASET_SNAPSHOT_RUN: stored or run.info.run_id,
                names.TAG_DATASET_TRAINED_BY: trainer, **_window_tags(built.window)}
        mlflow.log_input(dataset, context="training", tags=tags)
        mlflow.log_params({"rows": len(built.featured), "source": ctx.spec.spec.data.source,
                           **params.model_dump(exclude_unset=True)})
        mlflow.set_tags(tags)
        ctx.emit({names.OUTPUT_MLFLOW_RUN: run.info.run_id, names.OUTPUT_DATASET_DIGEST: digest,
                  names.OUTPUT_ROWS: len(built.featured), names.OUTPUT_FRESH: trainer == ctx.workflow})


def build(ctx: StepContext) -> Built:
    """The featured dataset of the spec's data section."""
    data = ctx.spec.spec.data
    try:
        if data.window is not None:
            uri = ctx.settings.prediction_log_uri
            lookback = ctx.workload.feature_lookback_days(data)  # type: ignore[attr-defined]
            window = read_window(uri, ctx.model, ctx.workload, data.window, lookback)
            source = f"{uri.rstrip('/')}/{names.LOG_PREDICTIONS}/model={ctx.model}"
            featured = window.training_rows(ctx.workload.featurize(window.frame, data))
        else:
            window, source = None, data.path or data.source
            featured = ctx.workload.featurize(ctx.workload.load_data(data, ctx.settings.data_dir), data)
    except (ValueError, FileNotFoundError, WindowUnavailable) as exc:
        raise StepFailed(f"cannot build the dataset: {exc}") from None
    return Built(featured, source, window)


def _write_snapshot(featured: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / DATASET_FILE
        featured.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), DATASET_ARTIFACT)


def _window_tags(window: WindowRows | None) -> dict[str, str]:
    if window is None:
        return {}
    return {names.TAG_DATASET_WINDOW: window.interval, names.TAG_DATASET_LOGGED_ROWS: str(window.logged_rows),
            names.TAG_DATASET_LABELLED_ROWS: str(window.labelled_rows)}


def resolved_data(data: DataSpec, window: str | None) -> DataSpec:
    """The data section as the workload splits it: a log window's split starts on the window's first day."""
    if data.split is None or data.split.train_start is not None or not window:
        return data
    start = date.fromisoformat(window.split("/")[0])
    return data.model_copy(update={"split": data.split.model_copy(update={"train_start": start})})


def load_prepared(ctx: StepContext) -> dict[str, Any]:
    """The data step's features, split as the workload defines: what tune, train and evaluate use."""
    import pandas as pd

    data_run = ctx.require_run(names.STEP_DATA)
    tags = data_run.data.tags
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=tags.get(names.TAG_DATASET_SNAPSHOT_RUN) or data_run.info.run_id,
            artifact_path=f"{DATASET_ARTIFACT}/{DATASET_FILE}", dst_path=tmp, tracking_uri=ctx.registry.uri)
        frame = pd.read_parquet(local)
    try:
        prepared = ctx.workload.prepare(frame, resolved_data(ctx.spec.spec.data, tags.get(names.TAG_DATASET_WINDOW)))
    except ValueError as exc:
        raise StepFailed(f"cannot split the dataset: {exc}") from None
    prepared["dataset_digest"] = tags.get(names.TAG_DATASET_DIGEST, "")
    return prepared
