"""fraud_detection as a ferry Workload: data, features, split, training loops, metrics, serving models.

Heavy imports (torch, ray) happen inside the methods that need them, so the platform can read
`facts` (for `ferry validate`: metric names and the params models) without loading the ML stack.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ferry.spec.checks import WorkloadFacts
from ferry.spec.models import DataSpec
from fraud_detection.features import FEATURE_NAMES, WINDOWS_DAYS, add_features
from fraud_detection.metrics import evaluate_named, evaluate_scores, train_test_split
from fraud_detection.params import TrainingParams
from fraud_detection.simulator import SimulatorParams, simulate

METRICS = ("auc_roc", "average_precision", "card_precision_at_100")
VALID_SHARE = 0.2
SCORE_THRESHOLD = 0.5


class Transaction(BaseModel):
    """One card transaction as the router receives it: the 15 model features plus the card id.
    Non-finite numbers (JSON `Infinity`, `NaN`, or a literal that overflows to infinity) are refused: the
    model would score them as NaN."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    customer_id: int = Field(ge=0, description="Card id; also the sticky key for canary routing.")
    tx_amount: float = Field(ge=0, le=1e7)
    tx_during_weekend: float = Field(ge=0, le=1)
    tx_during_night: float = Field(ge=0, le=1)
    customer_id_nb_tx_1day_window: float = Field(ge=0)
    customer_id_avg_amount_1day_window: float = Field(ge=0)
    customer_id_nb_tx_7day_window: float = Field(ge=0)
    customer_id_avg_amount_7day_window: float = Field(ge=0)
    customer_id_nb_tx_30day_window: float = Field(ge=0)
    customer_id_avg_amount_30day_window: float = Field(ge=0)
    terminal_id_nb_tx_1day_window: float = Field(ge=0)
    terminal_id_risk_1day_window: float = Field(ge=0, le=1)
    terminal_id_nb_tx_7day_window: float = Field(ge=0)
    terminal_id_risk_7day_window: float = Field(ge=0, le=1)
    terminal_id_nb_tx_30day_window: float = Field(ge=0)
    terminal_id_risk_30day_window: float = Field(ge=0, le=1)


# A transaction id is printable: it names keys in the state store and is a column of the prediction log.
_TRANSACTION_ID = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$",
                        description="The card network's id of the payment: a repeat is answered the same, once.")


class RawPayment(BaseModel):
    """One payment as the card network sends it: `/predict` computes the 15 features from it, online, with
    the card's and terminal's history in the feature state store (fraud_detection.state)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    transaction_id: str = _TRANSACTION_ID
    tx_datetime: datetime = Field(description="Event time: when the payment happened. Every window counts "
                                              "in event time; a time zone is dropped, not converted.")
    # Ids are int64, as the state store's records and the prediction log keep them.
    customer_id: int = Field(ge=0, lt=2**63, description="Card id; also the sticky key for canary routing.")
    terminal_id: int = Field(ge=0, lt=2**63)
    tx_amount: float = Field(ge=0, le=1e7)

    @field_validator("tx_datetime")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        # Windows count in int64 nanoseconds since 1970 (as the offline features do): years 1970..2261.
        if not 1970 <= value.year <= 2261:
            raise ValueError("tx_datetime must be between the years 1970 and 2261")
        return value


class Label(BaseModel):
    """A delayed label: whether a scored payment turned out to be fraud."""

    model_config = ConfigDict(extra="forbid")
    transaction_id: str = _TRANSACTION_ID
    fraud: bool


class Score(BaseModel):
    score: float
    fraud: bool


PREVIEW_CUSTOMERS = 300


class FraudDetectionWorkload:
    name = "fraud_detection"
    # Every training param is tunable; data.params are the simulator's (a parquet source ignores them).
    facts = WorkloadFacts(metrics=METRICS, data_params=SimulatorParams, training_params=TrainingParams,
                          reads_log=True)
    request_model = Transaction  # the 15 features: `/predict/features`
    raw_request_model = RawPayment  # what the card network sends: `/predict`
    event_time_field = "tx_datetime"
    label_model = Label
    response_model = Score
    feature_names = FEATURE_NAMES
    routing_key = "customer_id"
    threshold = SCORE_THRESHOLD

    def load_data(self, data: DataSpec, data_root: Path) -> pd.DataFrame:
        if data.source == "simulator":
            return simulate(SimulatorParams.model_validate(data.params))
        if data.source != "parquet" or data.path is None:
            raise ValueError(f"fraud_detection loads source 'simulator' or 'parquet' (with a path), not "
                             f"{data.source!r}: the platform reads a log window itself")
        path = (data_root / data.path).resolve()
        if not path.is_relative_to(data_root.resolve()):
            raise ValueError(f"data path {data.path!r} leaves the data root {data_root}")
        return pd.read_parquet(path)

    def feature_lookback_days(self, data: DataSpec) -> int:
        """How far back a row's features read: a card's longest window, a terminal's a label delay earlier."""
        return max(WINDOWS_DAYS) + (data.split.delay_days if data.split else 7)

    def featurize(self, frame: pd.DataFrame, data: DataSpec) -> pd.DataFrame:
        delay = data.split.delay_days if data.split else 7
        return add_features(frame, delay_days=delay)

    def dataset_digest(self, frame: pd.DataFrame) -> str:
        hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]

    def prepare(self, frame: pd.DataFrame, data: DataSpec) -> dict[str, Any]:
        if data.split is None or data.split.train_start is None:
            raise ValueError("fraud_detection needs spec.data.split (train_start, train_days, delay_days, test_days)")
        split = data.split
        train, test = train_test_split(frame, str(split.train_start), split.train_days, split.delay_days,
                                       split.test_days)
        if train.empty or test.empty:
            raise ValueError(f"the split starting {split.train_start} leaves an empty train or test set; "
                             "check it against the data's date range")
        cut = int(len(train) * (1 - VALID_SHARE))  # train is in time order: validate on its last days
        fit, valid = train.iloc[:cut], train.iloc[cut:]
        return {"x_train": _x(fit), "y_train": _y(fit), "x_valid": _x(valid), "y_valid": _y(valid),
                "x_test": _x(test), "y_test": _y(test), "test_frame": test[["tx_datetime", "customer_id", "tx_fraud"]]}

    def train_loop_per_worker(self, config: dict[str, Any]) -> None:
        from fraud_detection.training import train_loop_per_worker

        train_loop_per_worker(config)

    def tune_trainable(self, config: dict[str, Any], data: dict[str, Any], fixed_params: dict[str, Any]) -> None:
        from fraud_detection.training import tune_trainable

        tune_trainable(config, data, fixed_params)

    def load_checkpoint(self, folder: Path) -> Any:
        from fraud_detection.training import load_checkpoint_model

        return load_checkpoint_model(folder)

    def scoring_module(self, model: Any, prepared: Mapping[str, Any]) -> Any:
        from fraud_detection.model import Scorer

        return Scorer(model).eval()

    def evaluate(self, prepared: Mapping[str, Any], scores: Any) -> dict[str, float]:
        return evaluate_scores(prepared["test_frame"], np.asarray(scores))

    def evaluate_rows(self, rows: pd.DataFrame, scores: Any, names: Sequence[str]) -> dict[str, float]:
        """Metrics `names` of scores on logged rows (`history_from_log`): a rollout's judgement on labels."""
        return evaluate_named(rows, np.asarray(scores), names)

    def preview_data(self, data: DataSpec) -> DataSpec:
        """The plan's metric preview trains on at most PREVIEW_CUSTOMERS cards (terminals in proportion), the same
        days and split; a parquet source is read whole."""
        if data.source != "simulator":
            return data
        params = SimulatorParams.model_validate(data.params)
        scale = min(1.0, PREVIEW_CUSTOMERS / params.customers)
        smaller = {"customers": max(1, round(params.customers * scale)),
                   "terminals": max(1, round(params.terminals * scale))}
        return data.model_copy(update={"params": {**data.params, **smaller}})

    def fit_in_process(self, prepared: Mapping[str, Any], params: Mapping[str, Any], epochs: int, batch_size: int,
                       seed: int) -> Any:
        from fraud_detection.training import fit_in_process

        return fit_in_process(prepared, params, epochs, batch_size, seed)

    def predict_batch(self, model: Any, features: Any) -> Any:
        from fraud_detection.model import predict_proba

        return predict_proba(model, np.asarray(features, dtype=np.float32))

    def online_features(self, client: Any, namespace: str, delay_days: int) -> Any:
        """Serving's online features over a Redis client (ferry.serving.online)."""
        from fraud_detection.state import FeatureState, OnlineFeatures

        return OnlineFeatures(FeatureState(client, namespace, delay_days))

    def raw_history(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A simulated (or loaded) history as `ferry replay` sends it: each payment as the card network would
        send it, and its label, row for row."""
        ids = frame["transaction_id"].astype(str)
        requests = pd.DataFrame({"transaction_id": ids, **{name: frame[name] for name in (
            "tx_datetime", "customer_id", "terminal_id", "tx_amount")}})
        return requests, pd.DataFrame({"transaction_id": ids, "fraud": frame["tx_fraud"].astype(bool)})

    def history_from_log(self, logged: pd.DataFrame) -> pd.DataFrame:
        """`raw_history` the other way: logged payments with their label (`fraud`; missing when it has not come
        back, which counts as genuine, as in the online state) as rows, in event time order (a log's ids are
        strings, which do not sort in time as the simulator's do)."""
        frame = pd.DataFrame({name: logged[name] for name in (
            "transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount")})
        frame["tx_fraud"] = logged["fraud"].eq(True).astype(np.int8)
        return frame.sort_values(["tx_datetime", "transaction_id"], kind="stable").reset_index(drop=True)

    def example_raw_request(self) -> dict[str, Any]:
        """A raw payment for smoke tests and `ferry up`'s served prediction (a fixed id: asking twice is one
        payment)."""
        return {"transaction_id": "ferry-example-1", "tx_datetime": "2018-08-08T10:15:00", "customer_id": 42,
                "terminal_id": 3156, "tx_amount": 57.16}

    def example_request(self) -> dict[str, Any]:
        """A plausible transaction for smoke tests and `ferry up`'s served prediction."""
        return {"customer_id": 42, "tx_amount": 57.16, "tx_during_weekend": 0.0, "tx_during_night": 0.0,
                "customer_id_nb_tx_1day_window": 1.0, "customer_id_avg_amount_1day_window": 57.16,
                "customer_id_nb_tx_7day_window": 6.0, "customer_id_avg_amount_7day_window": 61.4,
                "customer_id_nb_tx_30day_window": 25.0, "customer_id_avg_amount_30day_window": 58.9,
                "terminal_id_nb_tx_1day_window": 2.0, "terminal_id_risk_1day_window": 0.0,
                "terminal_id_nb_tx_7day_window": 9.0, "terminal_id_risk_7day_window": 0.0,
                "terminal_id_nb_tx_30day_window": 35.0, "terminal_id_risk_30day_window": 0.0}

    def input_example(self, prepared: Mapping[str, Any]) -> np.ndarray:
        return prepared["x_test"][:4]


def _x(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)


def _y(frame: pd.DataFrame) -> np.ndarray:
    return frame["tx_fraud"].to_numpy(dtype=np.float32)


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ferry-fraud-"))
