"""Feedback on a ranking (ferry.serving.feedback, ferry.steps.feedback) without Ray: the recommender's router logs
each answer's items and, while mirroring, the other model's list; clicks come back on `/recommend/feedback`; the
rollout's paired sample attributes each click to the answer before it and counts a hit for each model."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from tests.unit.serving.test_serving_ranking import MODEL, SERVING, registry_with, service_of

from ferry.adapters.registry_port import RolloutView
from ferry.contract import names
from ferry.serving.feedback import RankingLog, feedback_item, takes_feedback
from ferry.serving.prediction_log import LogLimits, read_log
from ferry.serving.ranking import RankingService, build_ranking_api
from ferry.steps.feedback import FeedbackOutcomes
from fraud_detection.workload import FraudDetectionWorkload
from recommender.workload import Click, RecommenderWorkload, RecommendRequest


def log_at(tmp_path: Path) -> RankingLog:
    return RankingLog(tmp_path.as_uri(), MODEL, RecommendRequest, Click, LogLimits(flush_interval_s=0.05))


@pytest.fixture
def mirrored(tmp_path: Path) -> RankingService:
    """Champion 1 and challenger 2 at 50 %, every request mirrored, logging under `tmp_path`."""
    registry = registry_with(RolloutView("1", "2", 50))
    registry.tag_version(MODEL, "2", {names.TAG_ROLLOUT_SHADOW_SAMPLE: 1.0})
    base = service_of(registry)
    assert base.watcher.state.shadow_sample == 1.0
    return RankingService(MODEL, RecommenderWorkload(), base.watcher, base.recorder, "fp", log_at(tmp_path))


def flushed(service: RankingService) -> None:
    assert service.shadow is not None and service.log is not None
    service.shadow.close()
    service.log.close()


def test_only_the_recommender_declares_feedback_and_its_item_field() -> None:
    assert takes_feedback(RecommenderWorkload()) and not takes_feedback(FraudDetectionWorkload())
    assert feedback_item(RecommenderWorkload()) == "item_id"


def test_every_answer_is_logged_with_its_items_and_mirrored_to_the_other_model(mirrored: RankingService,
                                                                                tmp_path: Path) -> None:
    with TestClient(build_ranking_api(mirrored, SERVING)) as client:
        answers = client.post("/recommend/batch", json=[{"user_id": u, "k": 5} for u in range(1, 9)]).json()["answers"]
        assert client.post("/recommend/feedback", json=[{"user_id": 1, "item_id": 7}]).json() == {"stored": 1}
    flushed(mirrored)
    logged = read_log(tmp_path.as_uri(), names.LOG_PREDICTIONS, MODEL).to_pandas().sort_values("user_id")
    assert logged["user_id"].tolist() == list(range(1, 9))
    assert [list(items) for items in logged["items"]] == [[i["item_id"] for i in a["items"]] for a in answers]
    assert logged["version"].tolist() == [a["version"] for a in answers]
    shadow = read_log(tmp_path.as_uri(), names.LOG_SHADOW, MODEL).to_pandas()
    pairs = logged.merge(shadow, on="request_id", suffixes=("", "_shadow"))
    assert len(pairs) == 8 and (pairs["version"] != pairs["version_shadow"]).all()  # sample 1.0: every request
    clicks = read_log(tmp_path.as_uri(), names.LOG_LABELS, MODEL).to_pandas()
    assert clicks[["user_id", "item_id"]].values.tolist() == [[1, 7]]


def test_feedback_is_validated_and_without_a_log_a_503(mirrored: RankingService) -> None:
    with TestClient(build_ranking_api(mirrored, SERVING), raise_server_exceptions=False) as client:
        bad = client.post("/recommend/feedback", json=[{"user_id": 1}])
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "item_id"
        assert client.post("/recommend/feedback", json=[]).status_code == 422
    unlogged = service_of(registry_with(RolloutView("1", None, 0)))
    with TestClient(build_ranking_api(unlogged, SERVING), raise_server_exceptions=False) as client:
        answer = client.post("/recommend/feedback", json=[{"user_id": 1, "item_id": 2}])
        assert answer.status_code == 503 and "log" in answer.json()["detail"]
    flushed(mirrored)


def test_clicks_after_mirrored_answers_pair_both_models_hits(mirrored: RankingService, tmp_path: Path) -> None:
    since = time.time() - 1
    users = list(range(1, 21))
    answers, _ = mirrored.rank([RecommendRequest(user_id=u, k=5) for u in users])
    time.sleep(0.01)  # a click arrives after the answer it follows
    clicks = [Click(user_id=u, item_id=a["items"][0]["item_id"]) for u, a in zip(users, answers, strict=True)]
    mirrored.record_feedback(clicks)
    mirrored.record_feedback(clicks[:3])  # posted twice: counted once
    flushed(mirrored)
    sample = FeedbackOutcomes(tmp_path.as_uri(), MODEL, RecommenderWorkload()).sample("1", "2", since)
    assert sample.labelled == 20 and sample.shadow_rows == sum(a["variant"] == "champion" for a in answers)
    by_champion = (sample.rows["version"] == "1").to_numpy()
    assert sorted(sample.rows["user_id"]) == users and by_champion.sum() == sum(a["version"] == "1" for a in answers)
    # Each click was on the answering model's first item: a hit for it, and for the other only if it listed it.
    assert np.all(np.where(by_champion, sample.champion, sample.challenger) == 1.0)
    assert sample.positives == 20
    source = FeedbackOutcomes(tmp_path.as_uri(), MODEL, RecommenderWorkload())
    assert source.evaluate(sample.rows, sample.challenger, ["hit_rate"])["hit_rate"] == pytest.approx(
        sample.challenger.mean())
    with pytest.raises(KeyError, match="hit_rate"):
        source.evaluate(sample.rows, sample.challenger, ["average_precision"])


def write(tmp_path: Path, kind: str, table: pa.Table) -> None:
    folder = tmp_path / kind / f"model={MODEL}" / "date=2026-12-04"
    folder.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    pq.write_table(table, folder / f"part-{len(list(folder.iterdir()))}.parquet")


def at(second: int) -> datetime:
    return datetime.fromtimestamp(1_800_000_000 + second, UTC)


def test_a_click_counts_for_the_latest_paired_answer_before_it_and_failed_shadows_are_counted(tmp_path: Path) -> None:
    from ferry.serving.feedback import answers_schema, mirrored_schema
    from ferry.serving.prediction_log import arrow_fields, label_schema

    answers = [  # user 5 asked twice; user 6's answer was not mirrored (its shadow failed)
        {"user_id": 5, "k": 3, "exclude_seen": True, "request_id": "a", "items": [1, 2, 3], "version": "1",
         "variant": "champion", "serving_time": at(0)},
        {"user_id": 5, "k": 3, "exclude_seen": True, "request_id": "b", "items": [4, 5, 6], "version": "2",
         "variant": "challenger", "serving_time": at(10)},
        {"user_id": 6, "k": 3, "exclude_seen": True, "request_id": "c", "items": [7, 8, 9], "version": "1",
         "variant": "champion", "serving_time": at(10)},
    ]
    write(tmp_path, names.LOG_PREDICTIONS, pa.Table.from_pylist(answers, answers_schema(arrow_fields(
        RecommendRequest))))
    shadow = [{"request_id": "a", "items": [2, 9, 9], "version": "2", "variant": "challenger", "shadow_ms": 1.0,
               "serving_time": at(0)},
              {"request_id": "b", "items": [1, 4, 7], "version": "1", "variant": "champion", "shadow_ms": 1.0,
               "serving_time": at(10)},
              {"request_id": "c", "items": None, "version": "2", "variant": "challenger", "shadow_ms": 1.0,
               "serving_time": at(10)}]
    write(tmp_path, names.LOG_SHADOW, pa.Table.from_pylist(shadow, mirrored_schema()))
    clicks = [{"user_id": 5, "item_id": 2, "arrival_time": at(5)},  # after a: champion hit, challenger hit
              {"user_id": 5, "item_id": 4, "arrival_time": at(15)},  # after b: challenger hit, champion hit
              {"user_id": 5, "item_id": 6, "arrival_time": at(16)},  # after b: challenger hit only
              {"user_id": 5, "item_id": 6, "arrival_time": at(17)},  # the same click again: once
              {"user_id": 6, "item_id": 7, "arrival_time": at(20)},  # c has no shadow list: unpaired
              {"user_id": 7, "item_id": 1, "arrival_time": at(20)}]  # never answered
    write(tmp_path, names.LOG_LABELS, pa.Table.from_pylist(clicks, label_schema(arrow_fields(Click))))
    sample = FeedbackOutcomes(tmp_path.as_uri(), MODEL, RecommenderWorkload()).sample("1", "2", 1_800_000_000)
    assert sample.labelled == 3 and sample.positives == 3
    assert sample.rows["request_id"].tolist() == ["a", "b", "b"]
    assert sample.champion.tolist() == [1.0, 1.0, 0.0] and sample.challenger.tolist() == [1.0, 1.0, 1.0]
    assert (sample.shadow_rows, sample.shadow_failures) == (2, 1)
    later = FeedbackOutcomes(tmp_path.as_uri(), MODEL, RecommenderWorkload()).sample("1", "2", 1_800_000_100)
    assert later.labelled == 0
