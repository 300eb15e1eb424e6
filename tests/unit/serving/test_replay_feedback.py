"""`ferry replay` for a ranking workload (ferry.serving.replay_feedback) against a fake endpoint: each batch of
requests, then its clicks, hits counted per variant, bounded, loopback only, a clear error without a holdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.serving.replay import ReplayError, ReplayLimits, ReplayWindow
from ferry.serving.replay_feedback import replay_feedback, replay_feedback_model
from ferry.settings import Settings
from ferry.spec.loader import load_spec_file
from recommender.workload import RecommenderWorkload

ROOT = Path(__file__).resolve().parents[3]


class Endpoint:
    """Answers user u with items [u, u+1, u+2] from the champion (even users) or challenger (odd ones)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.url.path, body))
        if request.url.path == "/readyz":
            return httpx.Response(200, json={"status": "ready"})
        if request.url.path == "/recommend/batch":
            return httpx.Response(200, json={"answers": [
                {"items": [{"item_id": r["user_id"] + i, "score": 0.1} for i in range(3)], "fallback": False,
                 "model": "m", "version": "1", "variant": "challenger" if r["user_id"] % 2 else "champion"}
                for r in body]})
        return httpx.Response(200, json={"stored": len(body)})


def test_each_batch_of_requests_is_followed_by_its_clicks_and_hits_are_counted_per_variant() -> None:
    endpoint = Endpoint()
    requests = [{"user_id": u, "k": 10, "exclude_seen": True} for u in range(6)]
    clicks = [{"user_id": u, "item_id": u + (1 if u < 3 else 5)} for u in range(6)]  # users 0-2 hit, 3-5 miss
    report = replay_feedback("http://127.0.0.1:1", "recommend", requests, clicks,
                             RecommenderWorkload().answered_items, "item_id", ReplayLimits(batch_rows=4),
                             transport=httpx.MockTransport(endpoint))
    assert [path for path, _ in endpoint.calls] == ["/readyz", "/recommend/batch", "/recommend/feedback",
                                                    "/recommend/batch", "/recommend/feedback"]
    assert (report.sent, report.scored, report.labels_sent, report.labels["stored"]) == (6, 6, 6, 6)
    assert dict(report.clicks) == {"champion": 3, "challenger": 3}
    assert dict(report.hits) == {"champion": 2, "challenger": 1}  # users 0, 2 and 1
    bounded = replay_feedback("http://127.0.0.1:1", "recommend", requests, clicks,
                              RecommenderWorkload().answered_items, "item_id", ReplayLimits(batch_rows=4, limit=4),
                              transport=httpx.MockTransport(Endpoint()))
    assert bounded.sent == 4 and "count bound" in bounded.stopped_by


def test_only_loopback_and_only_a_spec_that_holds_ratings_out(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="only to this machine"):
        replay_feedback("http://10.0.0.1:8000", "recommend", [], [], list, "item_id", ReplayLimits())
    spec, _ = load_spec_file(ROOT / "gitops/models/recommender.yaml")
    workload = RecommenderWorkload()
    without = spec.model.model_copy(deep=True)
    without.spec.data.params.pop("holdout_share", None)
    with pytest.raises(ReplayError, match="holdout_share"):
        replay_feedback_model(Settings(home=tmp_path), without, workload, {}, ReplayWindow(), ReplayLimits())
    with pytest.raises(ReplayError, match="--start and --days"):
        replay_feedback_model(Settings(home=tmp_path), spec.model, workload, {}, ReplayWindow(start="2020-01-01"),
                              ReplayLimits())
