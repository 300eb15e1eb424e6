"""The durable record of what the local webhook receiver got: `.ferry/alerts/alerts.db` (SQLite).

SQLite rather than JSONL because every notification updates an alert that is already recorded (firing,
then resolved, then repeated), `ferry alerts` filters by model and state, and the receiver's threads and a
reader in another process must never see half a write. One connection per operation, WAL journal.

Tables:
- ``alerts``: one row per alert instance, keyed like Alertmanager keys it (label fingerprint + startsAt);
  each notification updates its status, endsAt and the time it was last received.
- ``triggers``: which alert instances asked for a retraining run, and what became of it.
- ``pipeline_runs``: each local run's completion (workflow, finishedAt, phase), seen once; the source of
  the counter ``ferry_pipeline_runs_total`` (see ferry.local.alerts.receiver).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.settings import Settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, alertname TEXT NOT NULL, status TEXT NOT NULL,
    severity TEXT NOT NULL, team TEXT NOT NULL, model TEXT NOT NULL, summary TEXT NOT NULL,
    description TEXT NOT NULL, runbook_url TEXT NOT NULL, ends_at TEXT, generator_url TEXT NOT NULL,
    labels TEXT NOT NULL, annotations TEXT NOT NULL, receiver TEXT NOT NULL,
    first_received_at TEXT NOT NULL, last_received_at TEXT NOT NULL, notifications INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, starts_at));
CREATE INDEX IF NOT EXISTS alerts_by_model ON alerts (model, status);
CREATE TABLE IF NOT EXISTS triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL, received_at TEXT NOT NULL, result TEXT NOT NULL, workflow TEXT NOT NULL,
    phase TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS triggers_by_alert ON triggers (fingerprint, starts_at);
CREATE TABLE IF NOT EXISTS pipeline_runs (
    workflow TEXT NOT NULL, finished_at TEXT NOT NULL, model TEXT NOT NULL, phase TEXT NOT NULL,
    counted INTEGER NOT NULL, PRIMARY KEY (workflow, finished_at));
"""
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert that has not resolved


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def db_path(settings: Settings) -> Path:
    return settings.state_dir / "alerts" / "alerts.db"


@dataclass(frozen=True)
class RecordedAlert:
    """One alert instance as `ferry alerts` shows it."""

    fingerprint: str
    starts_at: str
    alertname: str
    status: str
    severity: str
    team: str
    model: str
    summary: str
    description: str
    runbook_url: str
    ends_at: str | None
    first_received_at: str
    last_received_at: str
    notifications: int
    labels: dict[str, str]
    retraining: list[dict[str, str]]

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Incoming:
    """One alert of a webhook notification, already validated (ferry.local.alerts.receiver)."""

    fingerprint: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str | None
    generator_url: str


class AlertStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (now(),))

    @classmethod
    def open(cls, settings: Settings) -> AlertStore:
        return cls(db_path(settings))

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:  # one transaction: committed on success, rolled back on an exception
                yield db
        finally:
            db.close()

    @property
    def created_at(self) -> str:
        with self._connect() as db:
            return str(db.execute("SELECT value FROM meta WHERE key = 'created_at'").fetchone()[0])

    # --- alerts ------------------------------------------------------------------------------------

    def record(self, alerts: Iterable[Incoming], receiver: str) -> int:
        """Insert new alert instances, update known ones; returns how many were recorded."""
        count = 0
        stamp = now()
        with self._connect() as db:
            for alert in alerts:
                row = _row(alert, receiver, stamp)
                db.execute(
                    "INSERT INTO alerts VALUES (:fingerprint, :starts_at, :alertname, :status, :severity, :team,"
                    " :model, :summary, :description, :runbook_url, :ends_at, :generator_url, :labels,"
                    " :annotations, :receiver, :received, :received, 1)"
                    " ON CONFLICT (fingerprint, starts_at) DO UPDATE SET status = excluded.status,"
                    " ends_at = excluded.ends_at, annotations = excluded.annotations,"
                    " summary = excluded.summary, description = excluded.description,"
                    " runbook_url = excluded.runbook_url, receiver = excluded.receiver,"
                    " last_received_at = excluded.last_received_at, notifications = notifications + 1", row)
                count += 1
        return count

    def alerts(self, model: str | None = None, firing: bool = False, limit: int | None = None) -> list[RecordedAlert]:
        """Newest first (by when the alert started)."""
        where, args = ["1 = 1"], []
        if model:
            where.append("model = ?")
            args.append(model)
        if firing:
            where.append("status = 'firing'")
        sql = f"SELECT * FROM alerts WHERE {' AND '.join(where)} ORDER BY starts_at DESC, alertname"  # noqa: S608
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(sql, args).fetchall()
            return [_recorded(row, self._triggers_of(db, row["fingerprint"], row["starts_at"])) for row in rows]

    # --- retraining triggers -----------------------------------------------------------------------

    def add_trigger(self, model: str, alerts: Iterable[Incoming], result: str, workflow: str = "",
                    message: str = "") -> list[int]:
        stamp = now()
        with self._connect() as db:
            return [int(db.execute(
                "INSERT INTO triggers (model, fingerprint, starts_at, received_at, result, workflow, phase, message)"
                " VALUES (?, ?, ?, ?, ?, ?, '', ?)",
                (model, a.fingerprint, a.starts_at, stamp, result, workflow, message)).lastrowid or 0)
                for a in alerts]

    def update_triggers(self, ids: Iterable[int], **fields: str) -> None:
        allowed = {k: v for k, v in fields.items() if k in ("result", "workflow", "phase", "message")}
        if not allowed:
            return
        assignments = ", ".join(f"{k} = ?" for k in allowed)
        with self._connect() as db:
            for trigger_id in ids:
                db.execute(f"UPDATE triggers SET {assignments} WHERE id = ?",  # noqa: S608 - fixed column names
                           (*allowed.values(), trigger_id))

    def interrupt_unfinished(self, message: str) -> int:
        """Mark triggers whose run never reported an end (its receiver died) as Interrupted."""
        with self._connect() as db:
            return db.execute("UPDATE triggers SET phase = 'Interrupted', message = ? WHERE result IN"
                              " ('starting', 'started') AND phase IN ('', 'Running')", (message,)).rowcount

    def retrained_for(self, alerts: Iterable[Incoming]) -> str | None:
        """The run an earlier notification of one of these alert instances already started, if any."""
        with self._connect() as db:
            for alert in alerts:
                found = db.execute("SELECT workflow FROM triggers WHERE fingerprint = ? AND starts_at = ?"
                                   " AND result = 'started' ORDER BY id LIMIT 1",
                                   (alert.fingerprint, alert.starts_at)).fetchone()
                if found:
                    return str(found[0])
        return None

    @staticmethod
    def _triggers_of(db: sqlite3.Connection, fingerprint: str, starts_at: str) -> list[dict[str, str]]:
        rows = db.execute("SELECT received_at, result, workflow, phase, message FROM triggers"
                          " WHERE fingerprint = ? AND starts_at = ? ORDER BY id", (fingerprint, starts_at)).fetchall()
        keys = ("received_at", "result", "workflow", "phase", "message")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # --- pipeline run completions ------------------------------------------------------------------

    def note_completions(self, completions: Iterable[tuple[str, str, str, str]]) -> None:
        """(workflow, finishedAt, model, phase) of finished runs; each is stored once. A completion that
        happened before this store existed is stored but not counted: it only makes its series appear at 0,
        so a first `ferry up` never reports old failures as new."""
        created = self.created_at
        with self._connect() as db:
            for workflow, finished_at, model, phase in completions:
                db.execute("INSERT OR IGNORE INTO pipeline_runs VALUES (?, ?, ?, ?, ?)",
                           (workflow, finished_at, model, phase, int(finished_at >= created)))

    def completion_counts(self) -> dict[tuple[str, str], int]:
        with self._connect() as db:
            rows = db.execute("SELECT model, phase, SUM(counted) FROM pipeline_runs GROUP BY model, phase").fetchall()
        return {(str(model), str(phase)): int(total) for model, phase, total in rows}


def _row(alert: Incoming, receiver: str, stamp: str) -> dict[str, Any]:
    labels, notes = alert.labels, alert.annotations
    return {"fingerprint": alert.fingerprint, "starts_at": alert.starts_at, "alertname": labels.get("alertname", ""),
            "status": alert.status, "severity": labels.get("severity", ""), "team": labels.get("team", ""),
            "model": labels.get("model", ""), "summary": notes.get("summary", ""),
            "description": notes.get("description", ""), "runbook_url": notes.get("runbook_url", ""),
            "ends_at": alert.ends_at, "generator_url": alert.generator_url,
            "labels": json.dumps(labels, sort_keys=True), "annotations": json.dumps(notes, sort_keys=True),
            "receiver": receiver, "received": stamp}


def _recorded(row: sqlite3.Row, triggers: list[dict[str, str]]) -> RecordedAlert:
    return RecordedAlert(
        fingerprint=row["fingerprint"], starts_at=row["starts_at"], alertname=row["alertname"], status=row["status"],
        severity=row["severity"], team=row["team"], model=row["model"], summary=row["summary"],
        description=row["description"], runbook_url=row["runbook_url"], ends_at=row["ends_at"],
        first_received_at=row["first_received_at"], last_received_at=row["last_received_at"],
        notifications=row["notifications"], labels=json.loads(row["labels"]), retraining=triggers)
