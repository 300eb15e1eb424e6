"""A durable, partitioned Parquet log of what serving did, written in batches off the request path.

`PredictionLog.append` only queues a batch's columns, and `append_deferred` only what they will be built from
(a scored request's rows, features and answers: the Arrow batch is built by the writer, off the request path);
a writer thread turns what has queued into one Parquet file every `flush_interval_s` (or sooner, at
`flush_rows`), under one URI:

    <uri>/<kind>/model=<model>/date=<UTC date of writing>/part-<writer>-<sequence>.parquet

`file://` locally (`.ferry/logs/...`), the object store of MLflow's artifacts on a cluster (`s3://...`): anything
`pyarrow.fs.FileSystem.from_uri` opens. A local file appears whole or not at all (written beside, then renamed);
an object store's PUT is atomic by itself. Readers see hive partitions (`read_log`).

**What can be lost, and no more:** rows queued since the last flush when the process is killed, i.e. at most
`flush_interval_s` of traffic (plus the time one write takes), or `flush_rows` rows, whichever comes first. A
clean `close()` loses nothing. When the store cannot take writes the queue is bounded (`max_queued_rows`): the
request path never blocks on the log, newer rows are dropped and counted in `dropped_rows` instead.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel

from ferry.contract.names import LOG_LABELS, LOG_PREDICTIONS, LOG_SHADOW

logger = logging.getLogger("ferry.serving.prediction_log")
FEATURES_COLUMN = "features"
EVENT_TIME_COLUMN = "event_time"  # what a window of the log is read by (ferry.steps.log_window)
SERVING_TIME_COLUMN = "serving_time"  # when the router answered (or scored in shadow): UTC


@dataclass(frozen=True)
class LogLimits:
    flush_interval_s: float = 1.0
    flush_rows: int = 8192
    max_queued_rows: int = 200_000


@dataclass(frozen=True)
class _Deferred:
    rows: int
    columns: Callable[[], Mapping[str, Sequence[Any] | Any]]


class PredictionLog:
    """Append-only Parquet log of one kind (`predictions`, `labels`) for one model, from one writer."""

    def __init__(self, uri: str, kind: str, model: str, schema: Any, limits: LogLimits = LogLimits(),
                 writer: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.uri, self.kind, self.model = uri, kind, model
        self.filesystem: Any = None  # opened by the writer thread: an object store may need a network call
        self.root = ""
        self.schema, self.limits, self._clock = schema, limits, clock
        self.writer = writer or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sequence = itertools.count()
        self._queue: list[Any] = []
        self._queued_rows = 0
        self._lock = threading.Condition()
        self._closing = False
        self.written_rows = self.dropped_rows = self.failed_writes = self.failed_builds = 0
        self._thread = threading.Thread(target=self._run, name=f"ferry-log-{kind}", daemon=True)
        self._thread.start()

    def append(self, columns: Mapping[str, Sequence[Any] | Any]) -> bool:
        """Queue one batch of rows (equal-length columns, the schema's names). False when it was dropped
        because the queue is full; never blocks on storage."""
        import pyarrow as pa

        batch = pa.RecordBatch.from_pydict(dict(columns), schema=self.schema)
        return self._enqueue(batch, batch.num_rows)

    def append_deferred(self, rows: int, columns: Callable[[], Mapping[str, Sequence[Any] | Any]]) -> bool:
        """Queue `rows` rows whose columns `columns()` returns, called by the writer thread: the Arrow conversion
        of a scored request (its raw fields row by row, its features) then costs the response nothing. What
        `columns` reads must not change after the call (the router passes copies)."""
        return self._enqueue(_Deferred(rows, columns), rows)

    def _enqueue(self, item: Any, rows: int) -> bool:
        with self._lock:
            if self._queued_rows + rows > self.limits.max_queued_rows:
                self.dropped_rows += rows
                return False
            self._queue.append(item)
            self._queued_rows += rows
            if self._queued_rows >= self.limits.flush_rows:
                self._lock.notify()
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, then stop the writer."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._closing and self._queued_rows < self.limits.flush_rows:
                    self._lock.wait(self.limits.flush_interval_s)
                batches, self._queue, self._queued_rows = self._queue, [], 0
                closing = self._closing
            if batches:
                self._write(self._built(batches))
            if closing:
                return

    def _built(self, queued: list[Any]) -> list[Any]:
        """The queued batches as Arrow, the deferred ones of a flush joined into one: built one by one, a single
        payment's columns cost more than its row. If the joined batch does not build (a bug, not a storage
        failure), each is built alone, so that only the broken ones are dropped."""
        import pyarrow as pa

        batches = [item for item in queued if not isinstance(item, _Deferred)]
        parts: list[tuple[int, dict[str, Any]]] = []
        for item in queued:
            if isinstance(item, _Deferred):
                try:
                    parts.append((item.rows, dict(item.columns())))
                except (ValueError, TypeError, IndexError, KeyError) as exc:
                    self._build_failed(item.rows, exc)
        if len(parts) > 1:
            try:
                return [*batches, self._arrow([columns for _, columns in parts])]
            except (pa.ArrowException, ValueError, TypeError):
                pass
        for rows, columns in parts:
            try:
                batches.append(self._arrow([columns]))
            except (pa.ArrowException, ValueError, TypeError) as exc:
                self._build_failed(rows, exc)
        return batches

    def _arrow(self, parts: list[dict[str, Any]]) -> Any:
        import pyarrow as pa

        return pa.RecordBatch.from_pydict(_arrow_columns(_joined(parts), self.schema), schema=self.schema)

    def _build_failed(self, rows: int, exc: Exception) -> None:
        # A bug, not a storage failure: say so.
        self.failed_builds += 1
        self.dropped_rows += rows
        logger.error("could not build a %s log batch (%d failed builds, %d rows dropped): %s", self.kind,
                     self.failed_builds, self.dropped_rows, exc, exc_info=self.failed_builds == 1)

    def _open(self) -> None:
        import pyarrow.fs

        if self.filesystem is None:
            self.filesystem, root = pyarrow.fs.FileSystem.from_uri(self.uri)
            self.root = f"{root.rstrip('/')}/{self.kind}/model={self.model}"

    def _write(self, batches: list[Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_batches(batches, schema=self.schema)
        day = datetime.fromtimestamp(self._clock(), UTC).date().isoformat()
        folder = f"{self.uri}/{self.kind}/model={self.model}/date={day}"
        name = f"part-{self.writer}-{next(self._sequence):08d}.parquet"
        try:
            self._open()
            folder = f"{self.root}/date={day}"
            self.filesystem.create_dir(folder, recursive=True)
            local = type(self.filesystem).__name__ == "LocalFileSystem"
            target = f"{folder}/.{name}.tmp" if local else f"{folder}/{name}"
            pq.write_table(table, target, filesystem=self.filesystem)
            if local:
                self.filesystem.move(target, f"{folder}/{name}")
        except (OSError, ValueError) as exc:  # pyarrow: OSError from storage, ValueError (ArrowInvalid) from a URI
            self.failed_writes += 1
            self.dropped_rows += table.num_rows
            # Once with the traceback, then one line per failure: a store that is down fails every second.
            logger.error("could not write %d logged rows to %s (%d failed writes, %d rows dropped): %s",
                         table.num_rows, folder, self.failed_writes, self.dropped_rows, exc,
                         exc_info=self.failed_writes == 1)
            return
        self.written_rows += table.num_rows


def read_log(uri: str, kind: str, model: str | None = None, columns: Sequence[str] | None = None,
             where: Any = None) -> Any:
    """Everything logged of one kind (optionally one model) as one pyarrow Table, partition columns included;
    only `columns` and the rows `where` (a `pyarrow.compute` expression) holds, when given: a window of a long
    log reads only that window's row groups."""
    import pyarrow.dataset as ds
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
    base = f"{root.rstrip('/')}/{kind}"
    if model is not None:
        base = f"{base}/model={model}"
    try:
        info = filesystem.get_file_info(base)
    except OSError:
        info = None
    nothing = FileNotFoundError(f"nothing logged under {uri}/{kind}" + (f" for {model}" if model else ""))
    if info is None or info.type == pyarrow.fs.FileType.NotFound:
        raise nothing
    dataset = ds.dataset(base, filesystem=filesystem, format="parquet", partitioning="hive",
                         exclude_invalid_files=False, ignore_prefixes=["."])
    # The folders come before the first file: a local writer creates them, then writes `.<name>.tmp` (ignored)
    # and renames it. Without a file the dataset has no columns, and a filter on one is an ArrowInvalid.
    if not dataset.files:
        raise nothing
    return dataset.to_table(columns=list(columns) if columns is not None else None, filter=where)


def prediction_schema(raw_fields: Sequence[tuple[str, Any]], feature_names: Sequence[str]) -> Any:
    """The prediction log's columns: the request's raw fields (name, pyarrow type), the features the model
    saw (a struct column `features`: a feature may share a raw field's name; `Table.flatten()` gives
    `features.<name>`), and what serving answered, with event and serving time (the model is the partition).
    `repeated`: the transaction id had been scored before, and these are the first time's features (the state
    counted it once)."""
    import pyarrow as pa

    return pa.schema([
        *raw_fields,
        (FEATURES_COLUMN, pa.struct([(name, pa.float32()) for name in feature_names])),
        ("version", pa.string()), ("variant", pa.string()),
        ("score", pa.float64()), ("decision", pa.bool_()), ("repeated", pa.bool_()),
        (EVENT_TIME_COLUMN, pa.timestamp("us")), (SERVING_TIME_COLUMN, pa.timestamp("us", tz="UTC")),
    ])


def arrow_fields(request_model: type[BaseModel]) -> list[tuple[str, Any]]:
    """A request model's fields as pyarrow columns (str, int, float, bool, datetime: what raw requests hold)."""
    import pyarrow as pa

    types = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), datetime: pa.timestamp("us")}
    fields = []
    for name, info in request_model.model_fields.items():
        if info.annotation not in types:
            raise TypeError(f"{request_model.__name__}.{name}: a logged raw field must be one of "
                            f"{', '.join(t.__name__ for t in types)}, not {info.annotation}")
        fields.append((name, types[info.annotation]))
    return fields


def label_schema(label_fields: Sequence[tuple[str, Any]]) -> Any:
    """The label log's columns: the label as it was posted, and when it arrived."""
    import pyarrow as pa

    return pa.schema([*label_fields, ("arrival_time", pa.timestamp("us", tz="UTC"))])


def shadow_schema(key_field: tuple[str, Any]) -> Any:
    """The shadow log's columns (ferry.serving.shadow): the join key, event time, the model that scored in shadow
    (version and role), its score (null when it failed), the time the shadow batch took, and when."""
    import pyarrow as pa

    return pa.schema([key_field, (EVENT_TIME_COLUMN, pa.timestamp("us")), ("version", pa.string()),
                      ("variant", pa.string()), ("score", pa.float64()), ("shadow_ms", pa.float64()),
                      (SERVING_TIME_COLUMN, pa.timestamp("us", tz="UTC"))])


def join_key(raw_model: type[BaseModel], label_model: type[BaseModel]) -> str:
    """The field a label and its request share (fraud_detection: `transaction_id`): how the logs join."""
    shared = [name for name in label_model.model_fields if name in raw_model.model_fields]
    if len(shared) != 1:
        raise TypeError(f"{label_model.__name__} must share exactly one field with {raw_model.__name__} (the id "
                        f"a label joins its prediction by), not {shared or 'none'}")
    return shared[0]


def join_labels(predictions: Any, labels: Any, key: str) -> Any:
    """Predictions (a pyarrow Table or pandas) with their label (the latest to arrive per `key`) as pandas, a
    left join: a prediction without a label yet has the label's columns and `arrival_time` missing."""
    latest = labels.to_pandas().sort_values("arrival_time").drop_duplicates(key, keep="last")
    latest = latest[[name for name in latest.columns if name not in ("model", "date")]]
    frame = predictions.to_pandas() if hasattr(predictions, "to_pandas") else predictions
    return frame.merge(latest, on=key, how="left", validate="many_to_one")


def read_served(uri: str, kind: str, model: str, columns: Sequence[str], since_unix: float, where: Any = None) -> Any:
    """What was logged of `kind` for `model` since `since_unix` (serving time), only `columns`, as one pyarrow
    Table; for predictions only each transaction's first scoring (a repeat is answered from the first one's
    features, so it says nothing new about the model). FileNotFoundError when nothing is logged yet."""
    import pyarrow.compute as pc

    chosen = pc.field(SERVING_TIME_COLUMN) >= datetime.fromtimestamp(since_unix, UTC)
    if kind == LOG_PREDICTIONS:
        chosen = chosen & ~pc.field("repeated")
    return read_log(uri, kind, model, columns=columns, where=chosen if where is None else chosen & where)


class ServingLog:
    """What a router logs: every raw request it scored (`scored`) and every label it was sent (`labelled`),
    each kind to its own `PredictionLog` under one URI."""

    def __init__(self, uri: str, model: str, raw_model: type[BaseModel], label_model: type[BaseModel],
                 feature_names: Sequence[str], event_time_field: str, limits: LogLimits = LogLimits()) -> None:
        self.raw_names = [name for name, _ in arrow_fields(raw_model)]
        self.label_names = [name for name, _ in arrow_fields(label_model)]
        self.key = join_key(raw_model, label_model)
        self.feature_names, self.event_time_field, self.model = tuple(feature_names), event_time_field, model
        schema = prediction_schema(arrow_fields(raw_model), self.feature_names)
        self.predictions = PredictionLog(uri, LOG_PREDICTIONS, model, schema, limits)
        self.labels = PredictionLog(uri, LOG_LABELS, model, label_schema(arrow_fields(label_model)), limits)
        key_field = next(field for field in arrow_fields(raw_model) if field[0] == self.key)
        self.shadow = PredictionLog(uri, LOG_SHADOW, model, shadow_schema(key_field), limits)

    def scored(self, rows: Sequence[BaseModel], features: np.ndarray, answers: Mapping[str, np.ndarray],
               repeated: np.ndarray, serving_s: float) -> None:
        """Queue one batch: `answers` holds per-row `version`, `variant`, `score`, `decision` (rows that drew
        an injected fault are left out by the caller: nothing was answered for them)."""
        def columns() -> dict[str, Any]:
            built: dict[str, Any] = {name: [_plain(getattr(row, name)) for row in rows] for name in self.raw_names}
            built[FEATURES_COLUMN] = features  # rows × features: the struct column (`_arrow_columns`)
            built.update(answers)
            built["repeated"] = repeated
            built[EVENT_TIME_COLUMN] = built[self.event_time_field]
            built[SERVING_TIME_COLUMN] = [datetime.fromtimestamp(serving_s, UTC)] * len(rows)
            return built

        self.predictions.append_deferred(len(rows), columns)

    def labelled(self, rows: Sequence[BaseModel], arrival_s: float) -> None:
        """Queue labels as they were posted (repeats too: the log keeps what arrived, and when)."""
        columns: dict[str, Any] = {name: [getattr(row, name) for row in rows] for name in self.label_names}
        columns["arrival_time"] = [datetime.fromtimestamp(arrival_s, UTC)] * len(rows)
        self.labels.append(columns)

    def shadowed(self, keys: Sequence[Any], event_times: Sequence[Any], version: str, variant: str,
                 scores: Sequence[float | None], shadow_ms: float) -> None:
        """Queue one shadow batch: the scores (None where the model failed) of the model that did not answer."""
        rows = len(keys)
        self.shadow.append({self.key: list(keys), EVENT_TIME_COLUMN: [_plain(t) for t in event_times],
                            "version": [version] * rows, "variant": [variant] * rows, "score": list(scores),
                            "shadow_ms": [shadow_ms] * rows,
                            SERVING_TIME_COLUMN: [datetime.now(UTC)] * rows})

    @property
    def dropped_rows(self) -> int:
        return self.predictions.dropped_rows + self.labels.dropped_rows + self.shadow.dropped_rows

    def close(self, timeout_s: float = 30.0) -> None:
        self.predictions.close(timeout_s)
        self.labels.close(timeout_s)
        self.shadow.close(timeout_s)


def _joined(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Deferred batches' columns end to end: arrays concatenated, lists chained."""
    if len(parts) == 1:
        return parts[0]
    joined: dict[str, Any] = {}
    for name in parts[0]:
        values = [part[name] for part in parts]
        if any(isinstance(value, np.ndarray) for value in values):
            joined[name] = np.concatenate(values)
        else:
            joined[name] = [item for value in values for item in value]
    return joined


def _arrow_columns(columns: dict[str, Any], schema: Any) -> dict[str, Any]:
    """A struct field given as a rows × fields array becomes its StructArray (one column per field)."""
    import pyarrow as pa

    out = dict(columns)
    for field in schema:
        value = out.get(field.name)
        if pa.types.is_struct(field.type) and isinstance(value, np.ndarray) and value.ndim == 2:
            out[field.name] = pa.StructArray.from_arrays(
                [pa.array(value[:, i], type=child.type) for i, child in enumerate(field.type)],
                fields=list(field.type))
    return out


def _plain(value: Any) -> Any:
    # Event time is wall-clock time with its zone dropped, not converted (fraud_detection.online.event_time_ns).
    return value.replace(tzinfo=None) if isinstance(value, datetime) else value
