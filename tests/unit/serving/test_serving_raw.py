"""Raw requests and labels through the router's HTTP API without Ray or Redis: the online features are an
in-memory stand-in here (the real ones against a real Redis: tests/integration/test_feature_state.py and
test_serving.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from tests.support.serving_fakes import make_service, serving_registry, transaction
from tests.unit.serving.test_serving_api import client_for

from ferry.adapters.registry_port import RolloutView
from ferry.contract.errors import RequestInFlight, StateStoreUnavailable
from ferry.contract.names import LOG_LABELS, LOG_PREDICTIONS
from ferry.serving.intake import InFlight
from ferry.serving.prediction_log import LogLimits, ServingLog, join_labels, read_log
from ferry.serving.routing import choose
from ferry.serving.service import ScoringService
from fraud_detection.features import FEATURE_NAMES
from fraud_detection.state import LabelReport, Observed


class InMemoryOnline:
    """Counts each transaction id once; features: the amount and the card's count so far."""

    def __init__(self) -> None:
        self.seen: dict[str, np.ndarray] = {}
        self.per_card: dict[int, int] = {}
        self.labels: dict[str, bool] = {}
        self.failure: Exception | None = None
        self.on_loop: list[bool] = []  # per observe: whether it ran on the event loop's thread

    def observe(self, rows: Sequence[Any]) -> Observed:
        self.on_loop.append(_on_event_loop())
        if self.failure:
            raise self.failure
        features, repeated = [], []
        for row in rows:
            repeated.append(row.transaction_id in self.seen)
            if not repeated[-1]:
                self.per_card[row.customer_id] = self.per_card.get(row.customer_id, 0) + 1
                vector = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
                vector[0], vector[3] = row.tx_amount, self.per_card[row.customer_id]
                self.seen[row.transaction_id] = vector
            features.append(self.seen[row.transaction_id])
        return Observed(np.vstack(features), np.array(repeated))

    def keys(self, rows: Sequence[Any]) -> list[int]:
        return [row.customer_id for row in rows]

    def record_labels(self, rows: Sequence[Any], arrival_ns: int) -> LabelReport:
        if self.failure:
            raise self.failure
        known = [row for row in rows if row.transaction_id in self.seen]
        repeated = sum(self.labels.get(row.transaction_id) == row.fraud for row in known)
        self.labels.update({row.transaction_id: row.fraud for row in known})
        return LabelReport(len(known) - repeated, repeated, 0,
                           tuple(row.transaction_id for row in rows if row.transaction_id not in self.seen))


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def payment(transaction_id: str = "t1", customer_id: int = 1, amount: float = 50.0, **extra: Any) -> dict[str, Any]:
    return {"transaction_id": transaction_id, "tx_datetime": "2018-08-08T10:15:00", "customer_id": customer_id,
            "terminal_id": 7, "tx_amount": amount, **extra}


@pytest.fixture
def online() -> InMemoryOnline:
    return InMemoryOnline()


@pytest.fixture
def service(online: InMemoryOnline) -> ScoringService:
    service = make_service(serving_registry(RolloutView("1", "2", 50)))
    service.online = online
    return service


@pytest.fixture
def client(service: ScoringService) -> Iterator[TestClient]:
    with client_for(service) as c:
        yield c


def test_predict_takes_a_raw_payment_and_routes_by_card(client: TestClient) -> None:
    for card in range(10):
        body = client.post("/predict", json=payment(f"t{card}", customer_id=card)).json()
        assert body["variant"] == choose(card, 50) and 0 <= body["score"] <= 1


def test_a_repeated_payment_is_answered_the_same_and_counted_once(client: TestClient,
                                                                   online: InMemoryOnline) -> None:
    first = client.post("/predict", json=payment("same")).json()
    again = client.post("/predict", json=payment("same")).json()
    assert again == first and online.per_card == {1: 1}


def test_batch_of_raw_payments_keeps_order(client: TestClient) -> None:
    rows = [payment(f"b{i}", customer_id=i, amount=10.0 * i) for i in range(5)]
    predictions = client.post("/predict/batch", json=rows).json()["predictions"]
    assert [p["variant"] for p in predictions] == [choose(i, 50) for i in range(5)]
    assert client.post("/predict/batch", json=[*rows, payment("b9")]).status_code == 422  # over max_batch_rows


@pytest.mark.parametrize(("body", "field"), [
    (payment(card="x"), "card"),
    (payment(transaction_id="a\x1eb"), "transaction_id"),
    (payment(tx_datetime="yesterday"), "tx_datetime"),
    (payment(amount=-1.0), "tx_amount"),
    ({k: v for k, v in payment().items() if k != "terminal_id"}, "terminal_id"),
    (payment(terminal_id=2**63), "terminal_id"),  # beyond int64, as the state store and the log keep ids
])
def test_a_bad_payment_is_a_422_naming_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert field in [str(part) for error in response.json()["detail"] for part in error["loc"]]


def test_the_models_features_are_taken_on_their_own_path(client: TestClient) -> None:
    assert client.post("/predict/features", json=transaction()).status_code == 200
    assert client.post("/predict/features/batch", json=[transaction(), transaction()]).status_code == 200
    assert client.post("/predict", json=transaction()).status_code == 422, "features are not a raw payment"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/batch", "/predict/features", "/predict/features/batch", "/labels"} <= set(paths)


def test_a_store_that_is_down_is_a_503_never_a_score(client: TestClient, online: InMemoryOnline) -> None:
    online.failure = StateStoreUnavailable("the feature state store (Redis) is unavailable: connection refused")
    response = client.post("/predict", json=payment("down"))
    assert response.status_code == 503 and "unavailable" in response.json()["detail"]
    assert client.post("/labels", json=[{"transaction_id": "down", "fraud": True}]).status_code == 503
    online.failure = None
    assert client.post("/predict", json=payment("down")).status_code == 200, "back once the store is"


def test_a_payment_alone_is_observed_on_the_event_loop_unless_the_store_just_failed(client: TestClient,
                                                                                     online: InMemoryOnline) -> None:
    client.post("/predict", json=payment("a1")).raise_for_status()
    online.failure = StateStoreUnavailable("the feature state store (Redis) is unavailable: timed out")
    assert client.post("/predict", json=payment("a2")).status_code == 503
    online.failure = None
    client.post("/predict", json=payment("a3")).raise_for_status()  # a hanging store must not hold the loop
    client.post("/predict", json=payment("a4")).raise_for_status()  # it answered again
    client.post("/predict/batch", json=[payment("b1"), payment("b2", 2)]).raise_for_status()
    assert online.on_loop == [True, True, False, True, False]


def test_a_payment_beside_another_request_is_observed_off_the_event_loop(service: ScoringService,
                                                                       online: InMemoryOnline) -> None:
    in_flight = InFlight()
    in_flight.count = 1  # another request inside the replica
    with client_for(service, in_flight=in_flight) as client:
        client.post("/predict", json=payment("c1")).raise_for_status()
    assert online.on_loop == [False]


def test_a_payment_scored_elsewhere_right_now_is_a_409(client: TestClient, online: InMemoryOnline) -> None:
    online.failure = RequestInFlight("transaction 'x' is being scored by another request; retry it")
    response = client.post("/predict", json=payment("x"))
    assert response.status_code == 409 and "retry" in response.json()["detail"]


def test_without_a_store_raw_routes_say_where_features_go(service: ScoringService) -> None:
    service.online = None
    with client_for(service) as client:
        response = client.post("/predict", json=payment())
        assert response.status_code == 503 and "/predict/features" in response.json()["detail"]
        assert client.post("/predict/features", json=transaction()).status_code == 200


def test_labels_are_counted_once_and_unknown_ones_reported(client: TestClient) -> None:
    client.post("/predict", json=payment("l1"))
    first = client.post("/labels", json=[{"transaction_id": "l1", "fraud": True},
                                         {"transaction_id": "nope", "fraud": False}]).json()
    assert first == {"stored": 1, "repeated": 0, "corrected": 0, "unmatched": ["nope"]}
    again = client.post("/labels", json=[{"transaction_id": "l1", "fraud": True}]).json()
    assert (again["stored"], again["repeated"]) == (0, 1)
    assert client.post("/labels", json=[{"transaction_id": "l1", "fraud": "maybe"}]).status_code == 422
    assert client.post("/labels", json=[]).status_code == 422


def test_every_scored_payment_and_label_is_logged(service: ScoringService, tmp_path: Path) -> None:
    from fraud_detection.workload import Label, RawPayment

    service.log = ServingLog(tmp_path.as_uri(), "fraud-detector", RawPayment, Label, FEATURE_NAMES, "tx_datetime",
                             LogLimits(flush_interval_s=0.05))
    with client_for(service) as client:
        client.post("/predict", json=payment("t1", amount=10.0)).raise_for_status()
        client.post("/predict/batch", json=[payment("t2", 2, 20.0), payment("t1", amount=10.0)]).raise_for_status()
        client.post("/labels", json=[{"transaction_id": "t1", "fraud": True}]).raise_for_status()
    service.log.close()
    logged = read_log(tmp_path.as_uri(), LOG_PREDICTIONS, "fraud-detector").flatten().to_pandas()
    logged = logged.sort_values("serving_time", kind="stable")
    assert logged["transaction_id"].tolist() == ["t1", "t2", "t1"]
    assert logged["repeated"].tolist() == [False, False, True]
    assert logged["tx_amount"].tolist() == logged[f"features.{FEATURE_NAMES[0]}"].tolist() == [10.0, 20.0, 10.0]
    assert set(logged["variant"]) <= {"champion", "challenger"} and logged["version"].isin(["1", "2"]).all()
    assert (logged["event_time"] == pd.Timestamp("2018-08-08T10:15:00")).all()
    assert ((logged["score"] >= 0.5) == logged["decision"]).all()
    joined = join_labels(pa.Table.from_pandas(logged), read_log(tmp_path.as_uri(), LOG_LABELS, "fraud-detector"),
                         "transaction_id")
    assert joined.loc[joined["transaction_id"] == "t1", "fraud"].tolist() == [True, True]
    assert joined.loc[joined["transaction_id"] == "t2", "fraud"].isna().all()
