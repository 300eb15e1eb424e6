"""Online features for a workload that takes raw requests: the connection to the feature state store.

A workload opts in by declaring `raw_request_model` (with its `event_time_field`), `label_model` and
`online_features(client, namespace, delay_days)` (fraud_detection: per-card and per-terminal history in Redis),
which returns what the router calls: `observe(rows)`, `keys(rows)`, `record_labels(rows, arrival_ns)`, and
`close(timeout_s)` as the router goes. The router then takes raw requests on `/predict` and `/predict/batch`,
the model's features on `/predict/features` and `/predict/features/batch`, and labels on `/labels`
(ferry.serving.api). Without a configured store the raw routes answer 503, naming why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ferry.contract.errors import StateStoreUnavailable
from ferry.serving.prediction_log import LogLimits, ServingLog
from ferry.serving.schemas import PredictionLogArgs, StateStoreArgs


def takes_raw_requests(workload: Any) -> bool:
    return all(hasattr(workload, name) for name in ("raw_request_model", "label_model", "online_features",
                                                    "event_time_field"))


def read_password(store: StateStoreArgs) -> str | None:
    if store.password_file:
        try:
            return Path(store.password_file).read_text().strip()
        except OSError as exc:
            raise StateStoreUnavailable(f"cannot read the feature state store's password file "
                                        f"{store.password_file}: {exc}") from exc
    if store.password_env:
        value = os.environ.get(store.password_env)
        if not value:
            raise StateStoreUnavailable(f"the environment variable {store.password_env} with the feature state "
                                        "store's password is not set (Secret ferry-redis on a cluster)")
        return value
    return None


def connect(store: StateStoreArgs) -> Any:
    """A Redis client (connections are made lazily and re-made after an outage, so a store that comes back is
    used again without a restart)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # redis-py's default retries a failed call 10 times with exponential backoff: during an outage each request
    # would hang for seconds before its 503. One immediate retry covers a pooled connection that a restarted
    # Redis closed; anything more is the client's to retry.
    return redis.Redis(host=store.host, port=store.port, password=read_password(store),
                       socket_timeout=store.timeout_s, socket_connect_timeout=store.timeout_s,
                       health_check_interval=30, retry=Retry(NoBackoff(), 1))


def online_features(workload: Any, store: StateStoreArgs | None) -> Any | None:
    """The workload's online features over the configured store; None when there is none to use."""
    if store is None or not takes_raw_requests(workload):
        return None
    return workload.online_features(connect(store), store.namespace, store.delay_days)


def serving_log(model: str, workload: Any, log: PredictionLogArgs | None) -> ServingLog | None:
    """The router's prediction and label log; None when none is configured or the workload takes no raw requests
    (only raw requests carry what the log keeps: the raw fields and the features computed from them)."""
    if log is None or not takes_raw_requests(workload):
        return None
    return ServingLog(log.uri, model, workload.raw_request_model, workload.label_model, workload.feature_names,
                      workload.event_time_field, LogLimits(flush_interval_s=log.flush_interval_s))
