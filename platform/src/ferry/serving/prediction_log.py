"""A durable, partitioned Parquet log of what serving did, written in batches off the request path.

`PredictionLog.append` only queues a batch's columns (microseconds); a writer thread turns what has queued into
one Parquet file every `flush_interval_s` (or sooner, at `flush_rows`), under one URI:

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

logger = logging.getLogger("ferry.serving.prediction_log")


@dataclass(frozen=True)
class LogLimits:
    flush_interval_s: float = 1.0
    flush_rows: int = 8192
    max_queued_rows: int = 200_000


class PredictionLog:
    """Append-only Parquet log of one kind (`predictions`, `labels`) for one model, from one writer."""

    def __init__(self, uri: str, kind: str, model: str, schema: Any, limits: LogLimits = LogLimits(),
                 writer: str | None = None, clock: Callable[[], float] = time.time) -> None:
        import pyarrow.fs

        self.filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
        self.root = f"{root.rstrip('/')}/{kind}/model={model}"
        self.schema, self.limits, self._clock = schema, limits, clock
        self.writer = writer or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sequence = itertools.count()
        self._queue: list[Any] = []
        self._queued_rows = 0
        self._lock = threading.Condition()
        self._closing = False
        self.written_rows = self.dropped_rows = self.failed_writes = 0
        self._thread = threading.Thread(target=self._run, name=f"ferry-log-{kind}", daemon=True)
        self._thread.start()

    def append(self, columns: Mapping[str, Sequence[Any] | Any]) -> bool:
        """Queue one batch of rows (equal-length columns, the schema's names). False when it was dropped
        because the queue is full; never blocks on storage."""
        import pyarrow as pa

        batch = pa.RecordBatch.from_pydict(dict(columns), schema=self.schema)
        with self._lock:
            if self._queued_rows + batch.num_rows > self.limits.max_queued_rows:
                self.dropped_rows += batch.num_rows
                return False
            self._queue.append(batch)
            self._queued_rows += batch.num_rows
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
                self._write(batches)
            if closing:
                return

    def _write(self, batches: list[Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_batches(batches, schema=self.schema)
        day = datetime.fromtimestamp(self._clock(), UTC).date().isoformat()
        folder = f"{self.root}/date={day}"
        name = f"part-{self.writer}-{next(self._sequence):08d}.parquet"
        try:
            self.filesystem.create_dir(folder, recursive=True)
            local = type(self.filesystem).__name__ == "LocalFileSystem"
            target = f"{folder}/.{name}.tmp" if local else f"{folder}/{name}"
            pq.write_table(table, target, filesystem=self.filesystem)
            if local:
                self.filesystem.move(target, f"{folder}/{name}")
        except OSError:
            self.failed_writes += 1
            self.dropped_rows += table.num_rows
            logger.exception("could not write %d logged rows to %s", table.num_rows, folder)
            return
        self.written_rows += table.num_rows


def read_log(uri: str, kind: str, model: str | None = None) -> Any:
    """Everything logged of one kind (optionally one model) as one pyarrow Table, partition columns included."""
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
    if info is None or info.type == pyarrow.fs.FileType.NotFound:
        raise FileNotFoundError(f"nothing logged under {uri}/{kind}" + (f" for {model}" if model else ""))
    dataset = ds.dataset(base, filesystem=filesystem, format="parquet", partitioning="hive",
                         exclude_invalid_files=False, ignore_prefixes=["."])
    return dataset.to_table()


def prediction_schema(raw_fields: Sequence[tuple[str, Any]], feature_names: Sequence[str]) -> Any:
    """The prediction log's columns: the request's raw fields (name, pyarrow type), the features the model
    saw, and what serving answered, with event and serving time."""
    import pyarrow as pa

    return pa.schema([
        *raw_fields,
        *((name, pa.float32()) for name in feature_names),
        ("model", pa.string()), ("version", pa.string()), ("variant", pa.string()),
        ("score", pa.float64()), ("decision", pa.bool_()),
        ("event_time", pa.timestamp("us")), ("serving_time", pa.timestamp("us", tz="UTC")),
    ])


def label_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("transaction_id", pa.string()), ("fraud", pa.bool_()),
                      ("arrival_time", pa.timestamp("us", tz="UTC"))])


def join_labels(predictions: Any, labels: Any) -> Any:
    """Predictions with their label (the latest to arrive per transaction) as pandas, a left join on
    `transaction_id`: a prediction without a label yet has `fraud` and `arrival_time` missing."""
    latest = (labels.to_pandas().sort_values("arrival_time")
              .drop_duplicates("transaction_id", keep="last")[["transaction_id", "fraud", "arrival_time"]])
    return predictions.to_pandas().merge(latest, on="transaction_id", how="left", validate="many_to_one")
