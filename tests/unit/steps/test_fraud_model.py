"""The fraud workload's model and training loop on a tiny frame, without Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ferry.checkpoints import resume
from fraud_detection.features import FEATURE_NAMES
from fraud_detection.model import Scorer, build_model, predict_proba, train_epoch
from fraud_detection.params import TrainingParams
from fraud_detection.training import _save, load_checkpoint_model
from fraud_detection.workload import FraudDetectionWorkload, Transaction


def toy(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    y = (x[:, 0] + 0.1 * rng.normal(size=n) > 1.0).astype(np.float32)
    return x, y


def test_training_learns_a_separable_signal() -> None:
    x, y = toy()
    model = build_model(x.shape[1], TrainingParams(hidden=16, dropout=0.0))
    model.set_scaling(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    losses = [train_epoch(model, optimizer, torch.as_tensor(x), torch.as_tensor(y), 64, generator) for _ in range(15)]
    assert losses[-1] < losses[0] * 0.5
    scores = predict_proba(model, x)
    assert scores.shape == (len(x),) and float(np.mean((scores > 0.5) == (y > 0.5))) > 0.9


def test_a_feature_constant_in_training_is_centred_not_blown_up() -> None:
    """A terminal risk that is 0 on every training row (no label back yet) must not reach the network divided by
    its near-zero std when serving sees its first fraud: the standardised input stays the raw difference."""
    x, _ = toy()
    column = FEATURE_NAMES.index("terminal_id_risk_1day_window")
    x[:, column] = 0.0
    model = build_model(x.shape[1], TrainingParams(hidden=8, dropout=0.0))
    model.set_scaling(x)
    assert float(model.std[column]) == 1.0 and float(model.mean[column]) == 0.0
    row = x[:1].copy()
    row[0, column] = 0.5
    standardised = (torch.as_tensor(row) - model.mean) / model.std
    assert float(standardised[0, column]) == pytest.approx(0.5)
    assert float(model.std[0]) == pytest.approx(float(x[:, 0].std()), rel=1e-5)  # the others are untouched


def test_checkpoint_roundtrip_uses_weights_only(tmp_path) -> None:
    x, _ = toy()
    model = build_model(x.shape[1], TrainingParams(hidden=8, dropout=0.3))
    model.set_scaling(x)
    optimizer = torch.optim.Adam(model.parameters())
    _save(tmp_path, model, optimizer, epoch=3, params=TrainingParams(hidden=8, dropout=0.3))
    loaded = load_checkpoint_model(tmp_path)
    assert torch.allclose(Scorer(loaded)(torch.as_tensor(x[:5])), Scorer(model.eval())(torch.as_tensor(x[:5])))

    class Folder:
        def as_directory(self):
            import contextlib

            return contextlib.nullcontext(str(tmp_path))

    fresh = build_model(x.shape[1], TrainingParams(hidden=8))
    assert resume(fresh, torch.optim.Adam(fresh.parameters()), Folder()) == 3


def test_request_model_rejects_bad_fields() -> None:
    good = {name: 0.0 for name in FEATURE_NAMES} | {"customer_id": 1}
    Transaction.model_validate(good)
    with pytest.raises(ValueError, match="tx_amount"):
        Transaction.model_validate(good | {"tx_amount": -1})
    with pytest.raises(ValueError, match="extra"):
        Transaction.model_validate(good | {"oops": 1})


def test_workload_facts_match_metrics() -> None:
    facts = FraudDetectionWorkload.facts
    assert set(facts.metrics) == {"auc_roc", "average_precision", "card_precision_at_100"}
    assert "customers" in facts.data_params.model_fields and "lr" in facts.training_params.model_fields
    assert set(facts.tunable_params) == {"hidden", "lr", "dropout", "weight_decay"}


def test_checkpoint_keeps_every_param_so_a_changed_default_cannot_change_the_model(tmp_path) -> None:
    x, _ = toy()
    model = build_model(x.shape[1], TrainingParams(hidden=8))
    _save(tmp_path, model, torch.optim.Adam(model.parameters()), epoch=1, params=TrainingParams(hidden=8))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["params"] == {"hidden": 8, "lr": 1e-3, "dropout": 0.1, "weight_decay": 0.0}


def test_run_time_params_accept_numpy_samples_but_refuse_bad_values() -> None:
    params = TrainingParams.from_values({"hidden": np.int64(32), "lr": np.float64(0.01)})
    assert params.hidden == 32 and type(params.hidden) is int
    with pytest.raises(ValueError, match="hidden"):
        TrainingParams.from_values({"hidden": -3})
    with pytest.raises(ValueError, match="hiden"):
        TrainingParams.from_values({"hiden": 3})


def test_a_tune_trial_trains_the_same_model_whatever_the_process_generator_held(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's seed, not the worker's global torch generator, draws the initial weights: the same params and data
    report the same metrics however many models the process built before."""
    import ray.tune

    from fraud_detection.training import tune_trainable

    x, y = toy()
    data = {"x_train": x[:300], "y_train": y[:300], "x_valid": x[300:], "y_valid": y[300:], "epochs": 2,
            "batch_size": 64, "seed": 3}
    reports: list[list[dict]] = []

    def run(global_seed: int) -> None:
        reports.append([])
        torch.manual_seed(global_seed)  # what an earlier trial in the same worker process would leave behind
        monkeypatch.setattr(ray.tune, "report", reports[-1].append)
        tune_trainable({"hidden": 8, "lr": 0.01}, data, {})

    run(0)
    run(12345)
    assert reports[0] == reports[1] and len(reports[0]) == 2
