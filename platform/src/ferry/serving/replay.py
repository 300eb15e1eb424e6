"""`ferry replay`: a workload's simulated history through a served model, as production would send it.

Raw requests go to `<route>/predict/batch` in event-time order, at a bounded rate; each label goes to
`<route>/labels` once the replay's event-time clock has passed its transaction's event time plus the label
delay (the spec's `data.split.delay_days`). The clock is the last event time of the batch about to be sent:
labels due by then go first. A label a little ahead of some rows of that batch changes none of their features,
because every label-dependent window ends `delay` before its row's event time (fraud_detection.features), so a
replay gives exactly the features the offline computation gives for the same history (tests/integration/
test_serving.py checks it through the prediction log). A batch never spans more than the delay, so a label
always follows its request.

Loopback only, bounded in count (`limit`) and time (`timeout_s`). A batch answered 408, 409 or 503 (a replica
restarting, a repeat in flight, the state store down) is retried with backoff a few times; then it is counted
as failed and the replay goes on.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from ferry.adapters.tls import tls_context
from ferry.contract.errors import FerryError
from ferry.contract.urls import is_loopback_url
from ferry.render.rayservice import DEFAULT_LABEL_DELAY_DAYS
from ferry.serving.prediction_log import join_key
from ferry.settings import Settings
from ferry.spec.models import ModelSpec

RETRIED_STATUSES = frozenset({408, 409, 503})
NS_PER_DAY = 86_400 * 10**9


class ReplayError(FerryError):
    """The replay cannot start or cannot reach the endpoint; the message says why."""


@dataclass(frozen=True)
class ReplayStream:
    """A history to replay, sorted by event time: request bodies and their labels, row for row, as JSON
    objects (what the workload's `raw_request_model` and `label_model` take), and each row's event time."""

    requests: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    event_ns: np.ndarray  # int64, non-decreasing

    def __post_init__(self) -> None:
        if not len(self.requests) == len(self.labels) == len(self.event_ns):
            raise ValueError("a replay stream needs one label and one event time per request")


@dataclass(frozen=True)
class ReplayLimits:
    batch_rows: int = 256
    rate_per_s: float = 2000.0  # requests (transactions) per second, at most
    limit: int = 100_000  # transactions sent, at most
    timeout_s: float = 600.0  # wall-clock bound of the whole replay


@dataclass
class ReplayReport:
    sent: int = 0
    scored: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # status (or error) -> rows
    labels_sent: int = 0
    labels: Counter[str] = field(default_factory=Counter)  # stored, repeated, corrected, unmatched
    elapsed_s: float = 0.0
    stopped_by: str = "end of history"
    first_event_ns: int | None = None
    last_event_ns: int | None = None
    # A ranking workload's replay (ferry.serving.replay_feedback): per variant, the clicks after its answers and
    # how many of them its list held.
    clicks: Counter[str] = field(default_factory=Counter)
    hits: Counter[str] = field(default_factory=Counter)


class Retryable(Exception):
    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status


def require_loopback(url: str) -> None:
    if not is_loopback_url(url):
        host = urlsplit(url).hostname or ""
        raise ReplayError(f"ferry replay sends only to this machine (127.0.0.1, localhost, ::1), not {host or url!r}")


def replay(url: str, stream: ReplayStream, delay_days: int, limits: ReplayLimits = ReplayLimits(),
           on_progress: Callable[[ReplayReport], None] | None = None,
           transport: httpx.BaseTransport | None = None) -> ReplayReport:
    """Send `stream` to the model served at `url` (its route prefix); labels after `delay_days` of event time.
    `transport`: httpx's default unless given (unit tests)."""
    require_loopback(url)
    report, started = ReplayReport(), time.monotonic()
    total = min(limits.limit, len(stream.requests))
    pending_labels, start = 0, 0  # labels[:pending_labels] are sent; requests[:start] too
    delay_ns = delay_days * NS_PER_DAY
    with httpx.Client(base_url=url, timeout=30.0, trust_env=False, transport=transport,
                      verify=tls_context()) as client:
        require_ready(client)
        while start < total:
            if time.monotonic() - started > limits.timeout_s:
                report.stopped_by = f"the time bound ({limits.timeout_s:g}s)"
                break
            end = _batch_end(stream.event_ns, start, min(total, start + limits.batch_rows), delay_ns)
            due = int(np.searchsorted(stream.event_ns[:start], stream.event_ns[end - 1] - delay_ns, side="right"))
            if due > pending_labels:
                _send_labels(client, stream.labels[pending_labels:due], limits.batch_rows, report)
                pending_labels = due
            _send_batch(client, stream.requests[start:end], report)
            report.first_event_ns = report.first_event_ns or int(stream.event_ns[start])
            report.last_event_ns = int(stream.event_ns[end - 1])
            start = end
            report.elapsed_s = time.monotonic() - started
            if on_progress is not None:
                on_progress(report)
            pace(started, report.sent, limits.rate_per_s)
    if start >= total and total < len(stream.requests):
        report.stopped_by = f"the count bound ({limits.limit} transactions)"
    report.elapsed_s = time.monotonic() - started
    return report


def require_ready(client: httpx.Client) -> None:
    try:
        response = client.get("/readyz")
    except httpx.TransportError as exc:
        raise ReplayError(f"nothing answers at {client.base_url} ({exc}): `ferry up` serves the model") from exc
    if response.status_code != 200:
        raise ReplayError(f"{client.base_url}/readyz answered {response.status_code} ({response.text[:200]}): the "
                          "model is not ready to score")


def history_stream(requests: pd.DataFrame, labels: pd.DataFrame, event_time_field: str) -> ReplayStream:
    """A workload's raw history (one request and one label per row) as a stream in event-time order."""
    event = requests[event_time_field].to_numpy(dtype="datetime64[ns]")
    order = np.argsort(event, kind="stable")
    requests, labels = requests.iloc[order].reset_index(drop=True), labels.iloc[order].reset_index(drop=True)
    for name in requests.columns:  # JSON has no datetime: ISO 8601, what the request model parses
        if pd.api.types.is_datetime64_any_dtype(requests[name]):
            requests[name] = requests[name].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return ReplayStream(requests.to_dict("records"), labels.to_dict("records"), event[order].astype(np.int64))


def _batch_end(event_ns: np.ndarray, start: int, end: int, delay_ns: int) -> int:
    """Cut the batch where it would span the label delay: a label due inside it would precede its request."""
    limit = int(np.searchsorted(event_ns[start:end], event_ns[start] + delay_ns, side="left"))
    return start + max(1, limit)


def pace(started: float, sent: int, rate_per_s: float) -> None:
    ahead = sent / rate_per_s - (time.monotonic() - started)
    if ahead > 0:
        time.sleep(ahead)


def _send_batch(client: httpx.Client, rows: list[dict[str, Any]], report: ReplayReport) -> None:
    report.sent += len(rows)
    try:
        post(client, "/predict/batch", rows)
    except Retryable as exc:
        report.failed[exc.status] += len(rows)
        return
    report.scored += len(rows)


def _send_labels(client: httpx.Client, labels: list[dict[str, Any]], batch_rows: int, report: ReplayReport) -> None:
    for first in range(0, len(labels), batch_rows):
        chunk = labels[first:first + batch_rows]
        report.labels_sent += len(chunk)
        try:
            answer = post(client, "/labels", chunk)
        except Retryable as exc:
            report.failed[f"labels {exc.status}"] += len(chunk)
            continue
        for kind in ("stored", "repeated", "corrected"):
            report.labels[kind] += int(answer.get(kind, 0))
        report.labels["unmatched"] += len(answer.get("unmatched", ()))


@retry(retry=retry_if_exception(lambda exc: isinstance(exc, Retryable)), stop=stop_after_attempt(4),
       wait=wait_exponential(multiplier=0.2, max=2.0), reraise=True)
def post(client: httpx.Client, path: str, body: list[dict[str, Any]]) -> Any:
    try:
        response = client.post(path, json=body)
    except httpx.TransportError as exc:
        raise Retryable("no answer", str(exc)) from exc
    if response.status_code == 200:
        return response.json()
    detail = response.text[:300]
    if response.status_code in RETRIED_STATUSES:
        raise Retryable(str(response.status_code), detail)
    if response.status_code == 404:
        raise ReplayError(f"{client.base_url}{path} answered 404: is the model served there, and does it take "
                          "what is replayed? (`ferry up` serves it; `ferry status` lists what runs)")
    if 400 <= response.status_code < 500:
        raise ReplayError(f"{client.base_url}{path} refused the replayed rows ({response.status_code}): {detail}")
    raise Retryable(str(response.status_code), detail)


@dataclass(frozen=True)
class ReplayWindow:
    """Which part of the history to send: from `start` (an ISO date; default: the first event) for `days`."""

    start: str | None = None
    days: float | None = None


def replay_model(settings: Settings, spec: ModelSpec, params: dict[str, Any], window: ReplayWindow,
                 limits: ReplayLimits, on_start: Callable[[int], None] | None = None,
                 on_progress: Callable[[ReplayReport], None] | None = None) -> ReplayReport:
    """`ferry replay MODEL`: simulate the model's data (its spec's `data.params`, overridden by `params`) and
    replay the window through the locally served model."""
    from ferry.adapters.workloads import load_workload
    from ferry.serving.deploy import serve_url
    from ferry.serving.online import takes_raw_requests

    workload: Any = load_workload(spec.spec.workload)
    if not takes_raw_requests(workload) or not hasattr(workload, "raw_history"):
        raise ReplayError(f"workload {spec.spec.workload} takes no raw requests: there is nothing to replay")
    data = spec.spec.data
    if data.source == "log":  # a model trained on its own traffic has no history to replay: simulate one
        data = data.model_copy(update={"source": "simulator", "window": None})
    data = data.model_copy(update={"params": {**data.params, **params}})
    check_params(workload, data.params)
    requests, labels = workload.raw_history(workload.load_data(data, settings.data_dir))
    if params:
        requests, labels = own_ids(requests, labels, join_key(workload.raw_request_model, workload.label_model),
                                   params)
    stream = _windowed(history_stream(requests, labels, workload.event_time_field), window)
    if on_start is not None:
        on_start(min(limits.limit, len(stream.requests)))
    split = spec.spec.data.split
    limits = replace(limits, batch_rows=min(limits.batch_rows, spec.spec.serving.limits.max_batch_rows))
    return replay(serve_url(settings, spec), stream, split.delay_days if split else DEFAULT_LABEL_DELAY_DAYS,
                  limits, on_progress)


def own_ids(requests: pd.DataFrame, labels: pd.DataFrame, key: str,
            params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The payments of a world simulated with --param values get ids of their own (the values' digest before
    the simulator's id): the same cards paying in a drifted world are new payments, not repeats of the spec's own
    history, which the router would answer from the first time's features. The same values again give the same
    ids, so replaying a world twice stays idempotent."""
    tag = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return (requests.assign(**{key: f"{tag}-" + requests[key].astype(str)}),
            labels.assign(**{key: f"{tag}-" + labels[key].astype(str)}))


def check_params(workload: Any, params: dict[str, Any]) -> None:
    from pydantic import ValidationError

    model = getattr(getattr(workload, "facts", None), "data_params", None)
    if model is None:
        return
    try:
        model.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors())
        raise ReplayError(f"bad --param for {model.__name__}: {problems}") from exc


def _windowed(stream: ReplayStream, window: ReplayWindow) -> ReplayStream:
    if not len(stream.event_ns):
        raise ReplayError("the simulated history is empty: check the data params")
    try:
        start = int(np.datetime64(window.start, "ns").astype(np.int64)) if window.start else int(stream.event_ns[0])
    except ValueError as exc:
        raise ReplayError(f"--start must be an ISO date or date-time (e.g. 2018-05-01), not {window.start!r}") from exc
    end = start + int(window.days * NS_PER_DAY) if window.days is not None else None
    first = int(np.searchsorted(stream.event_ns, start, side="left"))
    last = len(stream.event_ns) if end is None else int(np.searchsorted(stream.event_ns, end, side="left"))
    if first >= last:
        raise ReplayError(f"no simulated event in the window from {window.start or 'the start'} for "
                          f"{window.days} day(s)")
    return ReplayStream(stream.requests[first:last], stream.labels[first:last], stream.event_ns[first:last])
