"""What `ferry step register` stores for drift monitoring, built from the real fraud workload's prepared data."""

from __future__ import annotations

from datetime import date

import numpy as np
import torch

from ferry.spec.models import DataSpec, TimeSplit
from ferry.stats.reference import SCORE, Reference
from ferry.steps.register import drift_reference, example_outputs, model_signature, trained_at_tag, training_reference
from fraud_detection.model import FraudMLP, Scorer
from fraud_detection.workload import FraudDetectionWorkload

DATA = DataSpec(source="simulator", params={"customers": 150, "terminals": 300, "days": 30, "seed": 3},
                split=TimeSplit(train_start=date(2018, 4, 5), train_days=7, delay_days=7, test_days=7))


def test_reference_covers_every_feature_and_the_score_of_the_training_rows(tmp_path) -> None:
    workload = FraudDetectionWorkload()
    frame = workload.featurize(workload.load_data(DATA, tmp_path), DATA)
    prepared = workload.prepare(frame, DATA)
    torch.manual_seed(0)
    net = FraudMLP(len(workload.feature_names), hidden=8, dropout=0.0)
    net.set_scaling(prepared["x_train"])
    reference = training_reference(workload, prepared, Scorer(net).eval())
    rows = len(prepared["x_train"])
    assert reference.rows == rows and list(reference.features) == list(workload.feature_names)
    for name, hist in reference.features.items():
        assert sum(hist.counts) == rows, name
        column = prepared["x_train"][:, list(workload.feature_names).index(name)]
        assert hist.cuts[0] >= column.min() and hist.cuts[-1] <= column.max()
    assert reference.score is not None and sum(reference.score.counts) == rows
    assert 0 <= reference.score.cuts[0] <= reference.score.cuts[-1] <= 1
    assert SCORE not in reference.features
    text = reference.to_json()
    assert len(text) < 20_000 and Reference.from_json(text, "t") == reference
    # night transactions are a binary feature: its bins are cut at the values seen, not between them
    assert set(reference.features["tx_during_night"].cuts) <= {0.0, 1.0}
    assert np.isfinite(reference.score.cuts).all()


def test_trained_at_is_the_train_runs_end_in_utc() -> None:
    assert trained_at_tag(1_795_705_200_123) == "2026-11-26T15:00:00Z"
    assert trained_at_tag(None).endswith("Z")


def test_a_scorer_with_several_inputs_gets_a_named_tensor_signature_with_a_free_batch() -> None:
    from recommender.model import build_model
    from recommender.params import TrainingParams
    from recommender.serving import RecommenderScorer

    rated = (np.arange(60).reshape(6, 10) % 3 == 0).astype(np.float32)
    scorer = RecommenderScorer(build_model(10, TrainingParams(dim=4)), np.arange(6), rated, np.arange(100, 110))
    example = (np.array([0, 3], dtype=np.int64), np.array([True, False]))
    outputs = example_outputs(scorer, example)
    assert [o.shape for o in outputs] == [(2, 10), (2, 10), (2,), (2, 10)]
    signature = model_signature(example, outputs)
    inputs = signature.inputs.to_dict()
    assert [(i["name"], i["tensor-spec"]["dtype"], list(i["tensor-spec"]["shape"])) for i in inputs] == [
        ("input_0", "int64", [-1]), ("input_1", "bool", [-1])]
    assert [list(o["tensor-spec"]["shape"]) for o in signature.outputs.to_dict()] == [[-1, 10], [-1, 10], [-1],
                                                                                    [-1, 10]]
    rows = np.ones((3, 15), dtype=np.float32)  # one array in, one out: MLflow's own inference, as before
    assert list(model_signature(rows, np.zeros(3)).inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 15]


def test_a_workload_without_feature_columns_registers_no_drift_reference() -> None:
    from recommender.workload import RecommenderWorkload

    assert drift_reference(RecommenderWorkload(), {}, None) is None
