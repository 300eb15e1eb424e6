"""Fault injection (ferry.serving.faults): off unless the app args allow it; then 500s and delays per version."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from tests.support.serving_fakes import RecordingRecorder, make_service, serving_registry, transaction, transactions

from ferry.adapters.registry_port import RolloutView
from ferry.contract.names import TAG_FAULT_ERROR_RATE, TAG_FAULT_LATENCY_MS
from ferry.render.bundle import render_objects
from ferry.serving.api import build_api
from ferry.serving.faults import Fault, FaultBook, InjectedFault, settle
from ferry.serving.intake import InFlight
from ferry.serving.routing import choose
from ferry.serving.schemas import AppArgs, Prediction
from ferry.serving.service import ScoringService
from ferry.spec import load_specs
from ferry.spec.models import ServingSpec

ROOT = Path(__file__).resolve().parents[3]
SERVING = ServingSpec.model_validate({"route": "/fraud-detector", "limits": {"max_batch_rows": 10, "timeout_s": 2}})


def book(tags: dict[str, dict[str, str]], draw: float = 0.0) -> FaultBook:
    faults = FaultBook(lambda version: tags.get(version, {}), draw=lambda: draw)
    faults.refresh(tags)
    return faults


def client_for(service: ScoringService) -> TestClient:
    async def score_one(row: BaseModel) -> Prediction:  # what the Serve router's score_one does
        return (await settle(service.score_each([row]), service.faults))[0]

    return TestClient(build_api(service, score_one, SERVING, InFlight()), raise_server_exceptions=False)


def recorder(service: ScoringService) -> RecordingRecorder:
    assert isinstance(service.recorder, RecordingRecorder)
    return service.recorder


def test_fault_tags_parse_clamp_and_ignore_garbage() -> None:
    assert Fault.from_tags({}) is None
    assert Fault.from_tags({TAG_FAULT_ERROR_RATE: "0", TAG_FAULT_LATENCY_MS: "0"}) is None
    assert Fault.from_tags({TAG_FAULT_ERROR_RATE: "0.05"}) == Fault(0.05, 0.0)
    assert Fault.from_tags({TAG_FAULT_ERROR_RATE: "7", TAG_FAULT_LATENCY_MS: "150"}) == Fault(1.0, 150.0)
    for garbage in ("lots", "nan", "inf", "-1", ""):
        assert Fault.from_tags({TAG_FAULT_ERROR_RATE: garbage, TAG_FAULT_LATENCY_MS: garbage}) is None


def test_renderer_never_allows_fault_injection() -> None:
    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    [service] = render_objects([specs[0].model], "prod")["fraud-detector/rayservice.yaml"]
    assert "fault" not in service["spec"]["serveConfigV2"]
    assert AppArgs.model_validate({"model": "m", "workload": "w", "tracking_uri": "http://x",
                                   "serving": SERVING.model_dump()}).allow_fault_injection is False


def test_without_a_fault_book_the_service_ignores_everything() -> None:
    service = make_service(serving_registry(RolloutView("1", "2", 50)))
    assert service.faults is None
    with client_for(service) as client:
        assert all(client.post("/predict/features", json=transaction(customer_id=k)).status_code == 200
                   for k in range(20))
    assert recorder(service).total("server_error") == 0 and recorder(service).total("ok") == 20


def test_error_rate_fails_only_that_versions_rows_with_500_counted_as_server_error() -> None:
    service = make_service(serving_registry(RolloutView("1", "2", 50)))
    service.faults = book({"2": {TAG_FAULT_ERROR_RATE: "1"}})
    rows = transactions(10)
    results = service.score_each([service.workload.request_model.model_validate(r) for r in rows])
    expected = [choose(r["customer_id"], 50) for r in rows]
    assert [isinstance(r, InjectedFault) for r in results] == [v == "challenger" for v in expected]
    assert recorder(service).total("server_error", "challenger") == expected.count("challenger")
    assert recorder(service).total("ok", "champion") == expected.count("champion")
    assert recorder(service).total("ok", "challenger") == 0  # a faulted row is not also counted as scored
    with client_for(service) as client:
        champion = next(k for k in range(100) if choose(k, 50) == "champion")
        challenger = next(k for k in range(100) if choose(k, 50) == "challenger")
        assert client.post("/predict/features", json=transaction(customer_id=champion)).status_code == 200
        failed = client.post("/predict/features", json=transaction(customer_id=challenger))
        assert failed.status_code == 500 and "injected fault" in failed.json()["detail"]
        assert client.post("/predict/features/batch", json=[transaction(customer_id=challenger)]).status_code == 500


def test_error_rate_is_a_share_of_requests() -> None:
    draws = iter([0.01, 0.2, 0.04, 0.9] * 5)
    service = make_service(serving_registry(RolloutView("1", None, 0)))
    tags = {"1": {TAG_FAULT_ERROR_RATE: "0.05"}}
    service.faults = FaultBook(lambda version: tags[version], draw=lambda: next(draws))
    service.faults.refresh(["1"])
    with client_for(service) as client:
        statuses = [client.post("/predict/features", json=transaction(customer_id=k)).status_code for k in range(20)]
    assert statuses == [500, 200, 500, 200] * 5  # draws below 0.05 fail


def test_latency_is_added_to_that_version_only_and_faults_follow_the_tags() -> None:
    service = make_service(serving_registry(RolloutView("1", "2", 50)))
    tags: dict[str, dict[str, str]] = {"2": {TAG_FAULT_LATENCY_MS: "300"}}
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # what asyncio.sleep is asked, read instead of timed
        waits.append(seconds)

    service.faults = FaultBook(lambda version: tags.get(version, {}), sleep=sleep)
    service.faults.refresh(["1", "2"])
    champion = next(k for k in range(100) if choose(k, 50) == "champion")
    challenger = next(k for k in range(100) if choose(k, 50) == "challenger")

    def waited(client: TestClient, customer: int) -> list[float]:
        waits.clear()
        assert client.post("/predict/features", json=transaction(customer_id=customer)).status_code == 200
        return list(waits)

    with client_for(service) as client:
        assert waited(client, challenger) == [0.3]
        assert waited(client, champion) == []
        tags.clear()
        service.faults.refresh(["1", "2"])  # what every registry poll does: cleared tags, no fault
        assert waited(client, challenger) == []
    latencies = {(version, variant) for version, variant, _ in recorder(service).latencies}
    assert latencies == {("1", "champion"), ("2", "challenger")}


def test_the_injected_latency_is_a_real_wait_by_default() -> None:
    began = time.monotonic()
    asyncio.run(book({"2": {TAG_FAULT_LATENCY_MS: "50"}}).delay(["1", "2"]))
    assert time.monotonic() - began >= 0.05  # a lower bound only: a loaded machine can only make it longer


def test_router_reads_fault_tags_only_when_the_args_allow_it(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray.serve")
    from ferry.serving import app

    base = {"model": "fraud-detector", "workload": "fraud_detection", "tracking_uri": "http://127.0.0.1:1",
            "serving": SERVING.model_dump(mode="json"), "poll_interval_s": 3600}
    for allowed, status in ((False, 200), (True, 500)):
        registry = serving_registry(RolloutView("1", None, 0))
        registry.tag_version("fraud-detector", "1", {TAG_FAULT_ERROR_RATE: 1})  # the champion always fails
        args = AppArgs.model_validate({**base, "allow_fault_injection": allowed} if allowed else base)
        service = app.make_service(args, RecordingRecorder(), registry)
        try:
            # without the flag there is no fault book: nothing reads the tags
            assert service.faults is None if not allowed else service.faults.faults == {"1": Fault(1.0, 0.0)}
            with client_for(service) as client:
                assert client.post("/predict/features", json=transaction()).status_code == status
        finally:
            service.watcher.stop(timeout_s=1.0)
            if service.drift is not None:
                service.drift.stop(timeout_s=1.0)
