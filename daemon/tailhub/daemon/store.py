"""The jobs database: SQLite, written on every state change, read once at start."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tailhub.daemon.model import (
    JobRecord,
    JobState,
    SourceEvent,
    SourceSpec,
    spec_from_json,
    spec_to_json,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    submitted_at REAL NOT NULL,
    started_at REAL NOT NULL DEFAULT 0,
    ended_at REAL NOT NULL DEFAULT 0,
    upstream_connections INTEGER NOT NULL DEFAULT 0,
    sealed INTEGER NOT NULL DEFAULT 0,
    source_state TEXT NOT NULL DEFAULT '{}',
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    offset INTEGER NOT NULL,
    time REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_job ON events(job_id);
"""

_COLUMNS = (
    "id, name, spec, state, exit_code, reason, submitted_at, started_at, ended_at, "
    "upstream_connections, sealed, source_state, cancel_requested"
)


class JobStore:
    """Durable job records. Small synchronous writes: only state changes come here, never bytes."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash, which is the promise we make.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def create(self, name: str, spec: SourceSpec) -> JobRecord:
        now = time.time()
        cursor = self._db.execute(
            "INSERT INTO jobs (name, spec, state, submitted_at) VALUES (?, ?, ?, ?)",
            (name, json.dumps(spec_to_json(spec)), JobState.PENDING.value, now),
        )
        assert cursor.lastrowid is not None
        return JobRecord(id=cursor.lastrowid, name=name, spec=spec, submitted_at=now)

    def save(self, record: JobRecord) -> None:
        self._db.execute(
            "UPDATE jobs SET state=?, exit_code=?, reason=?, started_at=?, ended_at=?, "
            "upstream_connections=?, sealed=?, source_state=?, cancel_requested=? WHERE id=?",
            (
                record.state.value,
                record.exit_code,
                record.reason,
                record.started_at,
                record.ended_at,
                record.upstream_connections,
                int(record.sealed),
                json.dumps(record.source_state),
                int(record.cancel_requested),
                record.id,
            ),
        )

    def delete(self, job_ids: list[int]) -> None:
        """Deletes jobs and their events, all or none."""
        rows = [(job_id,) for job_id in job_ids]
        self._db.execute("BEGIN")
        try:
            self._db.executemany("DELETE FROM events WHERE job_id=?", rows)
            self._db.executemany("DELETE FROM jobs WHERE id=?", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def load_all(self) -> list[JobRecord]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id").fetchall()  # noqa: S608
        return [_record_from_row(row) for row in rows]

    def add_event(self, job_id: int, event: SourceEvent) -> None:
        self._db.execute(
            "INSERT INTO events (job_id, offset, time, message) VALUES (?, ?, ?, ?)",
            (job_id, event.offset, event.time, event.message),
        )

    def load_events(self) -> dict[int, list[SourceEvent]]:
        events: dict[int, list[SourceEvent]] = {}
        for job_id, offset, at, message in self._db.execute(
            "SELECT job_id, offset, time, message FROM events ORDER BY rowid"
        ):
            events.setdefault(job_id, []).append(SourceEvent(offset, message, at))
        return events


def _record_from_row(row: tuple[object, ...]) -> JobRecord:
    (
        job_id,
        name,
        spec,
        state,
        exit_code,
        reason,
        submitted_at,
        started_at,
        ended_at,
        upstream_connections,
        sealed,
        source_state,
        cancel_requested,
    ) = row
    return JobRecord(
        id=int(str(job_id)),
        name=str(name),
        spec=spec_from_json(json.loads(str(spec))),
        state=JobState(state),
        exit_code=None if exit_code is None else int(str(exit_code)),
        reason=str(reason),
        submitted_at=float(str(submitted_at)),
        started_at=float(str(started_at)),
        ended_at=float(str(ended_at)),
        upstream_connections=int(str(upstream_connections)),
        sealed=bool(sealed),
        source_state=json.loads(str(source_state)),
        cancel_requested=bool(cancel_requested),
    )
