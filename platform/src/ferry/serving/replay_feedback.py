"""`ferry replay` for a ranking workload: held-out user behaviour as requests and the clicks that follow them.

The workload's `feedback_history(data, data_root)` gives, in time order, one request and one click per row (the
recommender: each rating its `holdout_share` kept out of training and serving, as a request for that user's top
10 and then a click on the rated item). Each batch goes to `<route>/<endpoint>/batch`, then its clicks to
`<route>/<endpoint>/feedback`, so every click arrives after the answer it follows: what the canary's judgement on
feedback attributes it to (ferry.steps.feedback). The report counts, per variant that answered, the clicks and
how many of them its list held (the hit rate a user sees in the replay table).

Loopback only, bounded in count and time, paced, retried like the raw replay (ferry.serving.replay).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from ferry.adapters.tls import tls_context
from ferry.serving.replay import (
    ReplayError,
    ReplayLimits,
    ReplayReport,
    ReplayWindow,
    Retryable,
    check_params,
    pace,
    post,
    replay_model,
    require_loopback,
    require_ready,
)
from ferry.settings import Settings
from ferry.spec.models import ModelSpec


def replay_feedback(url: str, endpoint: str, requests: list[dict[str, Any]], clicks: list[dict[str, Any]],
                    items_of: Callable[[dict[str, Any]], list[int]], item_field: str,
                    limits: ReplayLimits,
                    on_progress: Callable[[ReplayReport], None] | None = None,
                    transport: httpx.BaseTransport | None = None) -> ReplayReport:
    """Send each batch of `requests`, then its `clicks` (row-aligned), to the ranking model served at `url`."""
    if len(requests) != len(clicks):
        raise ValueError("a feedback replay needs one click per request")
    require_loopback(url)
    report, started = ReplayReport(stopped_by="end of held-out history"), time.monotonic()
    total = min(limits.limit, len(requests))
    path = f"/{endpoint.strip('/')}"
    with httpx.Client(base_url=url, timeout=30.0, trust_env=False, transport=transport,
                      verify=tls_context()) as client:
        require_ready(client)
        for start in range(0, total, limits.batch_rows):
            if time.monotonic() - started > limits.timeout_s:
                report.stopped_by = f"the time bound ({limits.timeout_s:g}s)"
                break
            end = min(total, start + limits.batch_rows)
            answers = _ask(client, f"{path}/batch", requests[start:end], report)
            if answers is not None:
                _count_hits(answers, clicks[start:end], items_of, item_field, report)
                _send_clicks(client, f"{path}/feedback", clicks[start:end], report)
            report.elapsed_s = time.monotonic() - started
            if on_progress is not None:
                on_progress(report)
            pace(started, report.sent, limits.rate_per_s)
    if report.sent >= total and total < len(requests):
        report.stopped_by = f"the count bound ({limits.limit} requests)"
    report.elapsed_s = time.monotonic() - started
    return report


def _ask(client: httpx.Client, path: str, rows: list[dict[str, Any]], report: ReplayReport) -> list[Any] | None:
    report.sent += len(rows)
    try:
        answered: list[Any] = post(client, path, rows)["answers"]
    except Retryable as exc:
        report.failed[exc.status] += len(rows)
        return None
    report.scored += len(rows)
    return answered


def _count_hits(answers: list[Any], clicks: list[dict[str, Any]], items_of: Callable[[dict[str, Any]], list[int]],
                item_field: str, report: ReplayReport) -> None:
    for answer, click in zip(answers, clicks, strict=True):
        variant = str(answer.get("variant", ""))
        report.clicks[variant] += 1
        report.hits[variant] += int(click[item_field] in items_of(answer))


def _send_clicks(client: httpx.Client, path: str, clicks: list[dict[str, Any]], report: ReplayReport) -> None:
    report.labels_sent += len(clicks)
    try:
        report.labels["stored"] += int(post(client, path, clicks).get("stored", 0))
    except Retryable as exc:
        report.failed[f"feedback {exc.status}"] += len(clicks)


def replay_feedback_model(settings: Settings, spec: ModelSpec, workload: Any, params: dict[str, Any],
                          window: ReplayWindow, limits: ReplayLimits, on_start: Callable[[int], None] | None = None,
                          on_progress: Callable[[ReplayReport], None] | None = None) -> ReplayReport:
    """`ferry replay MODEL` for a ranking workload with feedback: its held-out history through the served model."""
    from ferry.serving.deploy import serve_url
    from ferry.serving.feedback import feedback_item

    if window.start is not None or window.days is not None:
        raise ReplayError(f"workload {spec.spec.workload} replays its held-out history in time order, whole: "
                          "--start and --days are for event-time histories (use --limit to send less)")
    data = spec.spec.data.model_copy(update={"params": {**spec.spec.data.params, **params}})
    check_params(workload, data.params)
    requests, clicks = workload.feedback_history(data, settings.data_dir)
    if len(requests) == 0:
        raise ReplayError(f"{spec.metadata.name} keeps no held-out history to replay: set data.params.holdout_share "
                          "in its spec (e.g. 0.05: each user's newest 5% of ratings, kept out of training and "
                          "serving) and run `ferry up` again; a model that saw every rating leaves nothing to replay")
    if on_start is not None:
        on_start(min(limits.limit, len(requests)))
    limits = replace(limits, batch_rows=min(limits.batch_rows, spec.spec.serving.limits.max_batch_rows))
    return replay_feedback(serve_url(settings, spec), workload.endpoint, requests.to_dict("records"),
                           clicks.to_dict("records"), workload.answered_items, feedback_item(workload), limits,
                           on_progress)


def replay_served_model(settings: Settings, spec: ModelSpec, params: dict[str, Any], window: ReplayWindow,
                        limits: ReplayLimits, on_start: Callable[[int], None] | None = None,
                        on_progress: Callable[[ReplayReport], None] | None = None) -> ReplayReport:
    """`ferry replay MODEL`: a ranking workload's held-out feedback, or any other workload's simulated raw history
    (ferry.serving.replay.replay_model)."""
    from ferry.adapters.workloads import load_workload

    workload: Any = load_workload(spec.spec.workload)
    if hasattr(workload, "feedback_history"):
        return replay_feedback_model(settings, spec, workload, params, window, limits, on_start, on_progress)
    return replay_model(settings, spec, params, window, limits, on_start, on_progress)
