"""The router's HTTP API without Ray: validation, size limits, responses, errors, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from tests.support.serving_fakes import (
    RecordingRecorder,
    make_service,
    publish,
    serving_registry,
    transaction,
    transactions,
)

from ferry.adapters.registry_memory import MemoryRegistry
from ferry.adapters.registry_port import RolloutView
from ferry.serving.api import build_api
from ferry.serving.intake import InFlight
from ferry.serving.routing import choose
from ferry.serving.schemas import Prediction
from ferry.serving.service import NoChampion, ScoringService
from ferry.spec.models import ServingSpec
from fraud_detection.workload import FraudDetectionWorkload

SERVING = ServingSpec.model_validate({"route": "/fraud-detector", "batching": {"max_batch_size": 8, "wait_ms": 1},
                                      "limits": {"max_body_bytes": 4096, "max_batch_rows": 5, "timeout_s": 1}})
BIG_SERVING = SERVING.model_copy(update={"limits": SERVING.limits.model_copy(update={"max_body_bytes": 65536})})


def client_for(service: ScoringService, serving: ServingSpec = SERVING, delay_s: float = 0.0,
               in_flight: InFlight | None = None) -> TestClient:
    async def score_one(row: BaseModel) -> Prediction:
        if delay_s:
            await asyncio.sleep(delay_s)
        return service.score([row])[0]

    return TestClient(build_api(service, score_one, serving, in_flight or InFlight()), raise_server_exceptions=False)


@pytest.fixture
def registry() -> MemoryRegistry:
    return serving_registry(RolloutView("1", "2", 50))


@pytest.fixture
def service(registry: MemoryRegistry) -> ScoringService:
    return make_service(registry)


@pytest.fixture
def client(service: ScoringService) -> Iterator[TestClient]:
    with client_for(service) as c:
        yield c


def recorder(service: ScoringService) -> RecordingRecorder:
    assert isinstance(service.recorder, RecordingRecorder)
    return service.recorder


def test_single_prediction(client: TestClient, service: ScoringService) -> None:
    for customer in range(20):
        body = client.post("/predict/features", json=transaction(customer_id=customer, amount=180)).json()
        variant = choose(customer, 50)
        assert body["variant"] == variant and body["version"] == ("2" if variant == "challenger" else "1")
        assert body["model"] == "fraud-detector" and 0.9 < body["score"] <= 1 and body["decision"] is True
    low = client.post("/predict/features", json=transaction(amount=10)).json()
    assert low["score"] < FraudDetectionWorkload.threshold and low["decision"] is False
    assert recorder(service).total("ok") == 21 and len(recorder(service).latencies) == 21


def test_batch_prediction_keeps_order_and_routes_each_row(client: TestClient, service: ScoringService) -> None:
    rows = transactions(5)
    response = client.post("/predict/features/batch", json=rows)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["variant"] for p in predictions] == [choose(r["customer_id"], 50) for r in rows]
    single = [client.post("/predict/features", json=r).json()["score"] for r in rows]
    assert [p["score"] for p in predictions] == pytest.approx(single)


def test_bad_payload_is_422_naming_the_field(client: TestClient, service: ScoringService) -> None:
    missing = transaction()
    del missing["tx_amount"]
    cases = {"tx_amount": missing, "tx_during_night": transaction(tx_during_night="night"),
             "customer_id": transaction(customer_id=-1), "surprise": transaction(surprise=1)}
    for field, payload in cases.items():
        response = client.post("/predict/features", json=payload)
        assert response.status_code == 422, field
        detail = response.json()["detail"]
        assert any(field in e["loc"] for e in detail), (field, detail)
        assert all(set(e) == {"loc", "msg", "type"} for e in detail)  # card data is not echoed back
    bad_row = transactions(3)
    bad_row[2]["tx_amount"] = "lots"
    detail = client.post("/predict/features/batch", json=bad_row).json()["detail"]
    assert detail[0]["loc"] == ["body", 2, "tx_amount"]
    assert recorder(service).total("client_error") == 5 and recorder(service).total("ok") == 0


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_non_finite_numbers_are_422_naming_row_and_field(client: TestClient, service: ScoringService,
                                                         literal: str) -> None:
    headers = {"content-type": "application/json"}
    field = "customer_id_avg_amount_30day_window"  # ge=0 only: unbounded above
    one = json.dumps(transaction(**{field: "MARK"})).replace('"MARK"', literal).encode()
    response = client.post("/predict/features", content=one, headers=headers)
    assert response.status_code == 422, response.text
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [(["body", field], "finite_number")]
    rows = transactions(3)
    rows[2][field] = "MARK"
    batch = json.dumps(rows).replace('"MARK"', literal).encode()
    response = client.post("/predict/features/batch", content=batch, headers=headers)
    assert response.status_code == 422, response.text
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [(["body", 2, field], "finite_number")]
    assert recorder(service).total("client_error") == 2 and recorder(service).total("ok") == 0


def test_malformed_json_and_wrong_shapes_are_422(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    assert client.post("/predict/features", content=b"{not json", headers=headers).status_code == 422
    assert client.post("/predict/features", json=[transaction()]).status_code == 422
    assert client.post("/predict/features/batch", json=transaction()).status_code == 422
    assert client.post("/predict/features/batch", json=[]).status_code == 422


def test_too_many_rows_is_422_with_the_limit(service: ScoringService) -> None:
    with client_for(service, BIG_SERVING) as client:
        response = client.post("/predict/features/batch", json=transactions(6))
    assert response.status_code == 422
    assert "at most 5" in json.dumps(response.json()["detail"])


def test_oversized_body_is_413_before_parsing(client: TestClient, service: ScoringService) -> None:
    rows = transactions(20)
    assert len(json.dumps(rows)) > SERVING.limits.max_body_bytes
    declared = client.post("/predict/features/batch", json=rows)
    assert declared.status_code == 413 and "4096" in declared.json()["detail"]
    # Answered before the body was read: the rest of it is still on the connection, which must not be reused.
    assert declared.headers["connection"] == "close"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        text = json.dumps(rows).encode()
        for i in range(0, len(text), 1000):
            yield text[i:i + 1000]

    streamed = client.post("/predict/features/batch", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.headers["connection"] == "close"
    garbage = client.post("/predict/features", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert garbage.status_code == 413  # too big wins over not-JSON: it is never parsed
    assert recorder(service).total("client_error") == 3


def test_probes_and_info(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive", "detail": ""}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["detail"] == "champion 1"
    info = client.get("/info").json()
    assert info | {"seconds_since_poll": None} == {
        "model": "fraud-detector", "fingerprint": "fp", "champion": "1", "challenger": "2", "weight": 50,
        "shadow_sample": 0.0, "registry_reachable": True, "last_error": None, "seconds_since_poll": None,
        "log_dropped_rows": None}


def test_without_champion_alive_but_not_ready_and_503() -> None:
    service = make_service(serving_registry())
    with client_for(service) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        response = client.post("/predict/features", json=transaction())
    assert response.status_code == 503 and "no champion" in response.json()["detail"]
    assert recorder(service).total("server_error") == 1


def test_a_readiness_probe_without_a_champion_has_the_registry_read_at_once() -> None:
    """A router started before its model's first version serves as soon as rollout sets it, not a poll later."""
    registry = serving_registry()
    service = make_service(registry)  # polls every hour
    service.watcher.start()
    try:
        with client_for(service) as client:
            assert client.get("/readyz").status_code == 503
            publish(registry, RolloutView("1", None, 0))
            deadline = time.monotonic() + 5
            while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.get("/readyz").json()["detail"] == "champion 1"
    finally:
        service.watcher.stop()


def test_failing_challenger_is_answered_by_the_champion() -> None:
    service = make_service(serving_registry(RolloutView("1", "2", 100), failing={"2"}))
    with client_for(service) as client:
        response = client.post("/predict/features/batch", json=transactions(4))
    assert response.status_code == 200
    assert {p["version"] for p in response.json()["predictions"]} == {"1"}
    assert recorder(service).total("server_error", "challenger") == 4 and recorder(service).total("ok") == 4


def test_failing_champion_is_a_json_500_counted_against_it() -> None:
    service = make_service(serving_registry(RolloutView("1", None, 0), failing={"1"}))
    with client_for(service) as client:
        response = client.post("/predict/features", json=transaction())
    assert response.status_code == 500 and "model failed" in response.json()["detail"]
    assert ("server_error", "1", "champion", 1) in recorder(service).requests


def test_slow_scoring_times_out_with_504(service: ScoringService) -> None:
    with client_for(service, delay_s=2.0) as client:
        response = client.post("/predict/features", json=transaction())
    assert response.status_code == 504 and "timeout_s" in response.json()["detail"]


def test_openapi_documents_the_workload_models(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/predict/features", "/predict/features/batch", "/healthz", "/readyz", "/info"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert "customer_id" in schemas["Transaction"]["properties"]
    batch = spec["paths"]["/predict/features/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert batch["maxItems"] == 5 and batch["items"] == {"$ref": "#/components/schemas/Transaction"}
    assert client.get("/docs").status_code == 200


def test_feature_matrix_follows_the_workload_feature_order(service: ScoringService) -> None:
    row = FraudDetectionWorkload.request_model.model_validate(transaction(amount=42.0))
    matrix = service.features([row])
    assert matrix.shape == (1, 15) and matrix.dtype.name == "float32" and matrix[0, 0] == 42.0
    assert service.workload.routing_key == "customer_id" and "customer_id" not in service.workload.feature_names


def test_the_fast_lane_answers_what_the_routes_would(client: TestClient) -> None:
    single = json.dumps(transaction(customer_id=7, amount=120)).encode()
    batch = json.dumps(transactions(4)).encode()
    for path, body in (("/predict/features", single), ("/predict/features/batch", batch)):
        lane = client.post(path, content=body, headers={"content-type": "application/json"})
        # A +json media type: the lane steps aside and FastAPI's route parses the body
        routed = client.post(path, content=body, headers={"content-type": "application/vnd.ferry+json"})
        assert lane.status_code == routed.status_code == 200, (lane.text, routed.text)
        assert lane.json() == routed.json() and lane.headers["content-type"] == "application/json"


def test_the_fast_lane_takes_only_clean_scoring_requests(service: ScoringService) -> None:
    from ferry.serving.api import Scoring, fast_lane, route_path

    async def score_one(row: BaseModel) -> Prediction:
        return service.score([row])[0]

    lane = fast_lane(Scoring(service, score_one, SERVING))
    json_headers = [(b"content-type", b"application/json; charset=utf-8")]

    def scope(path: str, headers: list[tuple[bytes, bytes]] = json_headers, root: str = "") -> dict[str, object]:
        return {"type": "http", "method": "POST", "path": root + path, "root_path": root, "headers": headers}

    good, bad = json.dumps(transaction()).encode(), json.dumps(transaction(amount=-5)).encode()
    assert asyncio.run(lane(scope("/predict/features", root="/fraud-detector"), good)) is not None
    assert asyncio.run(lane(scope("/predict/features"), bad)) is None  # FastAPI's 422, not the lane's
    assert asyncio.run(lane(scope("/predict/features/batch"), b"[{")) is None
    assert asyncio.run(lane(scope("/predict/features", headers=[(b"content-type", b"text/plain")]), good)) is None
    assert asyncio.run(lane(scope("/info"), good)) is None
    assert route_path(scope("/predict/features", root="/fraud-detector")) == "/predict/features"
    assert route_path({"path": "/fraud-detectorX/predict", "root_path": "/fraud-detector"}) == (
        "/fraud-detectorX/predict")


@pytest.mark.parametrize(("view", "failing"), [(RolloutView("1", "2", 50), set()), (RolloutView("1", None, 0), set()),
                                               (RolloutView("1", "2", 100), {"2"})])
def test_a_single_row_is_scored_as_in_a_batch(view: RolloutView, failing: set[str]) -> None:
    rows = [FraudDetectionWorkload.request_model.model_validate(t) for t in transactions(40)]
    alone = make_service(serving_registry(view, failing=failing))
    batched = make_service(serving_registry(view, failing=failing))
    assert [alone.score_single(row) for row in rows] == batched.score_each(rows)
    assert sorted(recorder(alone).requests) == sorted(  # the same counts, one row at a time
        (outcome, version, variant, 1) for outcome, version, variant, n in recorder(batched).requests
        for _ in range(n))


@pytest.mark.parametrize(("view", "failing"), [(RolloutView("1", "2", 50), set()), (RolloutView("1", "2", 100), {"2"})])
def test_a_batch_of_one_row_is_scored_as_in_a_larger_batch(view: RolloutView, failing: set[str]) -> None:
    """A single raw request is a batch of one row: routed by its key (a list's or a numpy array's, as the
    batch reader gives it) as every row of a larger batch is, the challenger's failure answered by the champion."""
    rows = [FraudDetectionWorkload.request_model.model_validate(t) for t in transactions(40)]
    batched = make_service(serving_registry(view, failing=failing))
    alone = make_service(serving_registry(view, failing=failing))
    features = batched.features(rows)
    keys = np.array([row.customer_id for row in rows], dtype=np.int64)
    whole = batched.score_batch(keys, features).results()
    assert [alone.score_batch(keys[i:i + 1], features[i:i + 1]).results()[0] for i in range(len(rows))] == whole
    assert [alone.score_batch([int(keys[i])], features[i:i + 1]).results()[0] for i in range(len(rows))] == whole
    assert {p.variant for p in whole} == ({"champion"} if failing else {"champion", "challenger"})


def test_a_single_row_without_champion_is_refused() -> None:
    with pytest.raises(NoChampion):
        make_service(serving_registry(RolloutView(None, None, 0))).score_single(
            FraudDetectionWorkload.request_model.model_validate(transaction()))
