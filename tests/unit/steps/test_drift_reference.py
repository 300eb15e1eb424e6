"""What `ferry step register` stores for drift monitoring, built from the real fraud workload's prepared data."""

from __future__ import annotations

from datetime import date

import numpy as np
import torch

from ferry.spec.models import DataSpec, TimeSplit
from ferry.stats.reference import SCORE, Reference
from ferry.steps.register import trained_at_tag, training_reference
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
