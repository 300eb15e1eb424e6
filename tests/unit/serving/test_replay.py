"""`ferry replay`'s sending order and bounds against a recording transport (the real endpoint:
tests/integration/test_serving.py, which checks feature parity through it)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from ferry.serving.replay import ReplayError, ReplayLimits, ReplayStream, history_stream, replay

DAY = 86_400 * 10**9
URL = "http://127.0.0.1:8000/fraud-detector"


class Endpoint:
    """Answers like the router and records what came in, in order; `statuses` answers the first calls."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []
        self.statuses = list(statuses or [])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/readyz"):
            return httpx.Response(200, json={"status": "ready"})
        body = json.loads(request.content)
        self.calls.append((request.url.path.rsplit("/", 1)[-1], body))
        if self.statuses:
            return httpx.Response(self.statuses.pop(0), json={"detail": "busy"})
        if request.url.path.endswith("/labels"):
            return httpx.Response(200, json={"stored": len(body), "repeated": 0, "corrected": 0, "unmatched": []})
        return httpx.Response(200, json={"predictions": [{"score": 0.1}] * len(body)})


def stream(days: list[float]) -> ReplayStream:
    ids = [f"t{i}" for i in range(len(days))]
    return ReplayStream([{"transaction_id": i} for i in ids], [{"transaction_id": i, "fraud": False} for i in ids],
                        (np.array(days) * DAY).astype(np.int64))


def run(days: list[float], endpoint: Endpoint, **limits: Any) -> Any:
    return replay(URL, stream(days), 7, ReplayLimits(**{"rate_per_s": 1e6, **limits}),
                  transport=httpx.MockTransport(endpoint))


def test_a_label_is_sent_once_its_delay_has_passed_before_the_batch_that_needs_it() -> None:
    endpoint = Endpoint()
    report = run([0, 1, 6.5, 7.0, 7.5, 8, 20], endpoint, batch_rows=2)
    sent: list[str] = []
    for kind, body in endpoint.calls:
        if kind == "batch":
            sent += [row["transaction_id"] for row in body]
        else:  # every label goes after its own request, and before any request 7 days or more later
            assert all(row["transaction_id"] in sent for row in body)
    order = [(kind, [row["transaction_id"] for row in body]) for kind, body in endpoint.calls]
    assert order == [("batch", ["t0", "t1"]), ("labels", ["t0"]), ("batch", ["t2", "t3"]), ("labels", ["t1"]),
                     ("batch", ["t4", "t5"]), ("labels", ["t2", "t3"]), ("labels", ["t4", "t5"]), ("batch", ["t6"])]
    assert report.scored == report.sent == 7 and report.labels["stored"] == report.labels_sent == 6


def test_a_batch_never_spans_the_delay_so_no_label_precedes_its_request() -> None:
    endpoint = Endpoint()
    run([0, 1, 8, 9], endpoint, batch_rows=4)
    order = [(kind, [row["transaction_id"] for row in body]) for kind, body in endpoint.calls]
    assert order == [("batch", ["t0", "t1"]), ("labels", ["t0", "t1"]), ("batch", ["t2", "t3"])]


def test_busy_answers_are_retried_then_counted_and_the_replay_goes_on() -> None:
    endpoint = Endpoint(statuses=[503, 503, 503, 503])
    report = run([0, 1, 2], endpoint, batch_rows=2)
    assert report.failed == {"503": 2} and report.scored == 1 and len(endpoint.calls) == 5


def test_a_refused_body_stops_the_replay_with_the_reason() -> None:
    with pytest.raises(ReplayError, match="refused the replayed rows \\(422\\)"):
        run([0, 1], Endpoint(statuses=[422]))


def test_bounded_in_count_and_loopback_only() -> None:
    report = run([0, 1, 2, 3], Endpoint(), batch_rows=3, limit=2)
    assert report.sent == 2 and "count bound" in report.stopped_by
    with pytest.raises(ReplayError, match="only to this machine"):
        replay("http://10.0.0.5:8000/m", stream([0]), 7)


def test_history_is_sorted_by_event_time_and_dates_become_iso_text() -> None:
    requests = pd.DataFrame({"transaction_id": ["b", "a"],
                             "tx_datetime": pd.to_datetime(["2018-04-02 10:00:00", "2018-04-01 09:30:00"])})
    labels = pd.DataFrame({"transaction_id": ["b", "a"], "fraud": [True, False]})
    history = history_stream(requests, labels, "tx_datetime")
    assert history.requests == [{"transaction_id": "a", "tx_datetime": "2018-04-01T09:30:00.000000"},
                                {"transaction_id": "b", "tx_datetime": "2018-04-02T10:00:00.000000"}]
    assert [label["transaction_id"] for label in history.labels] == ["a", "b"]
    assert np.all(np.diff(history.event_ns) > 0)


def test_a_model_trained_on_its_own_traffic_replays_a_simulated_history(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Any) -> None:
    """A `source: log` spec has no history of its own to send: replay simulates one from --param values."""
    import json as json_module
    from pathlib import Path

    from ferry.serving import replay as replay_module
    from ferry.serving.replay import ReplayWindow, replay_model
    from ferry.settings import Settings
    from ferry.spec import load_specs

    committed = load_specs([Path(__file__).resolve().parents[3] / "gitops/models/fraud-detector-lite.yaml"])[0][0]
    body = json_module.loads(committed.model.model_dump_json())
    body["spec"]["data"] = {"source": "log", "window": {"days": 21},
                            "split": {"train_days": 7, "delay_days": 7, "test_days": 7}}
    spec = type(committed.model).model_validate(body)
    sent: dict[str, Any] = {}
    monkeypatch.setattr("ferry.serving.deploy.serve_url", lambda settings, spec: "http://127.0.0.1:1/x")
    monkeypatch.setattr(replay_module, "replay", lambda url, stream, delay, limits, progress: sent.update(
        stream=stream, delay=delay))
    replay_model(Settings(home=tmp_path), spec, {"customers": 20, "terminals": 40, "days": 3, "seed": 2},
                 ReplayWindow(), ReplayLimits())
    assert len(sent["stream"].requests) > 0 and sent["delay"] == 7
    assert all(r["transaction_id"].startswith(_tag({"customers": 20, "terminals": 40, "days": 3, "seed": 2}))
               for r in sent["stream"].requests)
    ids = [r["transaction_id"] for r in sent["stream"].requests]
    assert ids == [r["transaction_id"] for r in sent["stream"].labels]


def _tag(params: dict[str, Any]) -> str:
    import pandas as pd

    from ferry.serving.replay import own_ids

    frame = pd.DataFrame({"transaction_id": ["7"]})
    return str(own_ids(frame, frame, "transaction_id", params)[0]["transaction_id"].iloc[0].removesuffix("7"))


def test_a_drifted_world_gets_ids_of_its_own_and_the_same_world_the_same_ones() -> None:
    """`--param amount_scale=3` after a normal replay: the same simulator ids must not come back as repeats."""
    normal, drifted = {"seed": 2}, {"seed": 2, "amount_scale": 3.0}
    assert _tag(normal) != _tag(drifted) and _tag(normal) == _tag(dict(normal)) and len(_tag(normal)) == 9
