"""The recommender's training half on a real Ray: ferry's Tuner over its trainable, Ray Train with two
workers (each a shard of the users, DDP), the checkpoint loaded back without pickles, ranked and scored.

Runs on a MovieLens 100K sample (the first 120 users) in a child process with its own local Ray, as
test_train_resume does."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.ray_script import run_ray_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SCRIPT = r"""
import json, sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ferry.spec.models import DataSpec, TrainingSpec, TuneSpec
from ferry.steps.tune import _tuner
from recommender.ranking import popularity, ranking_metrics
from recommender.workload import RecommenderWorkload

tmp = Path(sys.argv[1])
workload = RecommenderWorkload()
data = DataSpec(source="dataset", params={"max_users": 120})
prepared = workload.prepare(workload.load_data(data, tmp), data)
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")

space = {"dim": {"choice": [32, 64]}, "dropout": {"uniform": [0.0, 0.5]}}
tune_spec = TuneSpec(num_samples=4, max_concurrent=2, metric="ndcg_at_10", grace_period=3, space=space)
training = TrainingSpec(epochs=3, batch_size=32, params={"lr": 0.005}, tune=tune_spec)
ctx = SimpleNamespace(spec=SimpleNamespace(spec=SimpleNamespace(training=training)), workload=workload,
                      workflow="recommender-it", settings=SimpleNamespace(state_dir=tmp / "state"))
arrays = {key: prepared[key] for key in ("x_train", "y_train", "x_valid", "y_valid")}
tuned = _tuner(ctx, tune_spec, {**arrays, "epochs": 3, "batch_size": 32, "seed": 0}).fit()

config = {**arrays, "params": {"dim": 64, "dropout": 0.2, "lr": 0.005}, "epochs": 8, "batch_size": 16, "seed": 0}
trainer = TorchTrainer(workload.train_loop_per_worker, train_loop_config=config,
                       scaling_config=ScalingConfig(num_workers=2),
                       run_config=RunConfig(name="recommender", storage_path=str(tmp / "results")))
result = trainer.fit()
with result.checkpoint.as_directory() as folder:
    model = workload.load_checkpoint(Path(folder))
scores = workload.predict_batch(model, prepared["x_test"])
popular = np.tile(popularity(prepared["x_test"]), (len(prepared["x_test"]), 1))
print("RESULT" + json.dumps({
    "trials": [{"error": repr(r.error) if r.error else None, "ndcg": r.metrics.get("ndcg_at_10"),
                "pid": r.metrics.get("pid")} for r in tuned],
    "error": repr(result.error) if result.error else None, "epoch": result.metrics.get("epoch"),
    "shape": list(scores.shape), "items": int(prepared["x_test"].shape[1]),
    "metrics": workload.evaluate(prepared, scores), "popularity": workload.evaluate(prepared, popular)}))
"""


def test_tune_train_checkpoint_and_evaluate_on_ray(tmp_path: Path) -> None:
    result = run_ray_script(SCRIPT, tmp_path)
    assert len(result["trials"]) == 4 and all(t["error"] is None and t["ndcg"] > 0 for t in result["trials"])
    # Four trials, two at a time, in two processes: a trial reuses a finished one's actor (its imports and
    # data) instead of starting a process of its own (8-9 s of a short trial on 2 cores, docs/benchmarks/hpo.md).
    assert len({t["pid"] for t in result["trials"]}) <= 2, result["trials"]
    assert result["error"] is None and result["epoch"] == 8
    assert result["shape"] == [len_test := result["shape"][0], result["items"]] and len_test > 100
    metrics, popular = result["metrics"], result["popularity"]
    assert set(metrics) == {"recall_at_10", "ndcg_at_10", "coverage_at_10"}
    # Trained by two workers on their shards of the users, the model ranks better than popularity does.
    assert metrics["ndcg_at_10"] > popular["ndcg_at_10"], (metrics, popular)
