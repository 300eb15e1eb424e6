"""The ranking router (ferry.serving.ranking) without Ray: the recommender's exported scorer per version in the
in-memory registry, `/recommend` and `/recommend/batch`, sticky split, fallback, errors and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from tests.support.serving_fakes import RecordingRecorder, publish, watcher_of

from ferry.adapters.registry_memory import MemoryRegistry
from ferry.adapters.registry_port import RolloutView
from ferry.contract import names
from ferry.serving.intake import InFlight
from ferry.serving.ranking import RankingService, build_ranking_api, ranks
from ferry.serving.routing import choose
from ferry.spec.models import ServingSpec
from fraud_detection.workload import FraudDetectionWorkload
from recommender.model import build_model
from recommender.params import TrainingParams
from recommender.serving import RecommenderScorer, export
from recommender.workload import RecommenderWorkload

MODEL = "recommender"
SERVING = ServingSpec.model_validate({"route": "/recommender", "limits": {"max_body_bytes": 4096,
                                                                          "max_batch_rows": 8, "timeout_s": 5}})
USERS = np.arange(1, 41)  # known users 1..40; each rated items 0..19 of a 30-item catalogue, by a pattern


def program(seed: int) -> Any:
    """A registered version: the recommender's scorer over a random autoencoder, exported as register does."""
    torch.manual_seed(seed)
    rated = np.zeros((len(USERS), 30), dtype=np.float32)
    for row in range(len(USERS)):
        rated[row, [row % 20, (row * 7) % 20, (row * 3) % 20]] = 1.0
    model = build_model(30, TrainingParams(dim=8))
    return export(RecommenderScorer(model, USERS, rated, np.arange(500, 530))).module()


class Broken:
    def __call__(self, *inputs: torch.Tensor) -> Any:
        raise RuntimeError("this version cannot rank")


def registry_with(view: RolloutView, broken: tuple[str, ...] = ()) -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.ensure_registered_model(MODEL, "test")
    for number in (1, 2):
        version = str(number)
        registry.register_version(MODEL, f"s3://models/{version}", tags={names.TAG_ROLLOUT_WEIGHT: 0},
                                  program=Broken() if version in broken else program(number))
    publish(registry, view, MODEL)
    return registry


def service_of(registry: MemoryRegistry) -> RankingService:
    watcher = watcher_of(registry, MODEL)
    watcher.refresh()
    return RankingService(MODEL, RecommenderWorkload(), watcher, RecordingRecorder(), "fp")


@pytest.fixture
def service() -> RankingService:
    return service_of(registry_with(RolloutView("1", "2", 50)))


@pytest.fixture
def client(service: RankingService) -> Iterator[TestClient]:
    with TestClient(build_ranking_api(service, SERVING, InFlight()), raise_server_exceptions=False) as c:
        yield c


def recorder(service: RankingService) -> RecordingRecorder:
    assert isinstance(service.recorder, RecordingRecorder)
    return service.recorder


def test_only_a_workload_with_the_ranking_hooks_ranks() -> None:
    assert ranks(RecommenderWorkload()) and not ranks(FraudDetectionWorkload())


def test_recommend_answers_k_unseen_items_sticky_by_user(client: TestClient, service: RankingService) -> None:
    for user in range(1, 21):
        response = client.post("/recommend", json={"user_id": user, "k": 5})
        assert response.status_code == 200, response.text
        body = response.json()
        variant = choose(user, 50)
        assert body["variant"] == variant and body["version"] == ("2" if variant == "challenger" else "1")
        assert body["model"] == MODEL and body["fallback"] is False and len(body["items"]) == 5
        row = user - 1
        seen = {500 + row % 20, 500 + (row * 7) % 20, 500 + (row * 3) % 20}
        assert not seen & {item["item_id"] for item in body["items"]}
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert recorder(service).total("ok") == 20 and len(recorder(service).latencies) == 20
    assert all(positives == 0 for *_, positives in recorder(service).scored)  # a ranking has no decision


def test_an_unknown_user_gets_the_popularity_fallback_and_seen_items_on_request(client: TestClient) -> None:
    unknown = client.post("/recommend", json={"user_id": 10_000}).json()
    assert unknown["fallback"] is True and len(unknown["items"]) == 10
    again = client.post("/recommend", json={"user_id": 10_001}).json()
    if again["version"] == unknown["version"]:  # popularity is the data's, whatever the model
        assert again["items"] == unknown["items"]
    known = client.post("/recommend", json={"user_id": 3, "k": 30, "exclude_seen": False}).json()
    assert len(known["items"]) == 30  # nothing left out: the whole catalogue


def test_the_batch_keeps_order_and_answers_each_request_as_alone(client: TestClient) -> None:
    requests = [{"user_id": u, "k": k} for u, k in ((4, 3), (10_000, 2), (17, 10), (4, 1))]
    response = client.post("/recommend/batch", json=requests)
    assert response.status_code == 200, response.text
    answers = response.json()["answers"]
    assert [len(a["items"]) for a in answers] == [3, 2, 10, 1]
    assert [a["fallback"] for a in answers] == [False, True, False, False]
    for request, answer in zip(requests, answers, strict=True):
        alone = client.post("/recommend", json=request).json()
        assert [i["item_id"] for i in answer["items"]] == [i["item_id"] for i in alone["items"]]
        assert [i["score"] for i in answer["items"]] == pytest.approx([i["score"] for i in alone["items"]], rel=1e-5)
        assert (answer["version"], answer["variant"], answer["fallback"]) == (alone["version"], alone["variant"],
                                                                            alone["fallback"])


def test_bad_requests_are_4xx_naming_the_field(client: TestClient, service: RankingService) -> None:
    for body, field in (({"user_id": -1}, "user_id"), ({"user_id": 1, "k": 101}, "k"), ({"k": 3}, "user_id"),
                        ({"user_id": 1, "colour": "red"}, "colour")):
        response = client.post("/recommend", json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == field, response.text
    assert client.post("/recommend/batch", json=[]).status_code == 422
    assert client.post("/recommend/batch", json=[{"user_id": 1}] * 9).status_code == 422  # over max_batch_rows
    oversized = client.post("/recommend", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert oversized.status_code == 413
    assert recorder(service).total("client_error") == 7 and recorder(service).total("ok") == 0


def test_a_failing_challenger_is_counted_and_its_users_answered_by_the_champion() -> None:
    service = service_of(registry_with(RolloutView("1", "2", 100), broken=("2",)))
    answers, served = service.rank([RecommenderWorkload.request_model(user_id=u) for u in (1, 2, 3)])
    assert {a["version"] for a in answers} == {"1"} and served == {("1", "champion")}
    assert recorder(service).total("server_error", "challenger") == 3 and recorder(service).total("ok") == 3


def test_a_failing_champion_is_a_500_and_no_champion_a_503() -> None:
    failing = service_of(registry_with(RolloutView("2", None, 0), broken=("2",)))
    with TestClient(build_ranking_api(failing, SERVING), raise_server_exceptions=False) as client:
        response = client.post("/recommend", json={"user_id": 1})
        assert response.status_code == 500 and "failed" in response.json()["detail"]
    assert recorder(failing).total("server_error") == 1
    empty = service_of(registry_with(RolloutView(None, None, 0)))
    with TestClient(build_ranking_api(empty, SERVING), raise_server_exceptions=False) as client:
        assert client.post("/recommend", json={"user_id": 1}).status_code == 503
        assert client.get("/readyz").status_code == 503 and client.get("/healthz").status_code == 200


def test_the_canary_sees_each_answers_popularity_in_the_score_buckets(service: RankingService) -> None:
    seen: list[np.ndarray] = []
    service.recorder.scores = lambda version, variant, values, positives: seen.append(values)  # type: ignore[method-assign]
    service.rank([RecommenderWorkload.request_model(user_id=u, k=4) for u in range(1, 30)])
    values = np.concatenate(seen)
    assert len(values) == 29 and np.all((values >= 0) & (values <= 1)) and values.std() > 0
