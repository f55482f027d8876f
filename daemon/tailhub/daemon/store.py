"""The jobs database: SQLite, written on every state change, read once at start."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tailhub.daemon.domain import (
    JobRecord,
    JobState,
    LaunchKey,
    SourceEvent,
    SourceSpec,
    spec_from_json,
    spec_to_json,
)
from tailhub.daemon.errors import StorageFull, UnusableState
from tailhub.daemon.faults import is_disk_full
from tailhub.daemon.paths import shown

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
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- The token (by name) each job made over the network belongs to: its quota (quotas.py).
CREATE TABLE IF NOT EXISTS job_owners (
    job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
    token TEXT NOT NULL
);
-- The key a job was launched with, per caller (a token's name; '' the owner): a launch called
-- again with it gets this job back (launch_keys.py). Deleted with the job.
CREATE TABLE IF NOT EXISTS launch_keys (
    job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    UNIQUE (caller, key)
);
"""

_COLUMNS = (
    "id, name, spec, state, exit_code, reason, submitted_at, started_at, ended_at, "
    "upstream_connections, sealed, source_state, cancel_requested"
)


class JobStore:
    """Durable job records. Small synchronous writes: only state changes come here, never bytes.

    A database that cannot be read is refused (UnusableState), never started over: job ids
    must not be reused while logs of the old ones exist. A write that fails on a full disk
    raises StorageFull; nothing of it is stored, and later writes work once space is freed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash, which is the promise we make.
            self._db.execute("PRAGMA synchronous=NORMAL")
            (verdict,) = self._db.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"damaged: {verdict}")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise self._unreadable(error) from None

    def _unreadable(self, error: sqlite3.DatabaseError) -> UnusableState:
        home = shown(self.path.parent)
        return UnusableState(
            f"database {shown(self.path)} cannot be read ({error}); move it aside together with "
            f"{home}/logs and {home}/runs (their job ids belong to it), then start again"
        )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as error:
            if is_disk_full(error):
                raise StorageFull(
                    f"disk full: cannot write {shown(self.path)} ({error})"
                ) from error
            raise

    def instance_id(self) -> tuple[str, bool]:
        """The random identity of this database, and whether it was created just now.

        Logs carry it (see identity.py), so a new database never adopts old logs.
        """
        row = self._db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
        if row is not None:
            return str(row[0]), False
        # A database from before identities existed has used job ids: it is not new.
        new = self._db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0 and not (
            self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"
            ).fetchone()
            and self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
        )
        instance = secrets.token_hex(16)
        with self._writing():
            self._db.execute("INSERT INTO meta (key, value) VALUES ('instance', ?)", (instance,))
        return instance, new

    def keep_ids_above(self, job_id: int) -> bool:
        """Makes the next job's id greater than `job_id` (files of that job exist, though
        the database may not know it: an older copy restored). True if it had to."""
        (known,) = self._db.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM sqlite_sequence WHERE name = 'jobs'), 0),"
            " coalesce((SELECT max(id) FROM jobs), 0))"
        ).fetchone()
        if job_id <= known:
            return False
        # AUTOINCREMENT takes the next id from here (never below it, even once rows go).
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM sqlite_sequence WHERE name = 'jobs'")
                self._db.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?)", (job_id,)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def create(
        self,
        name: str,
        spec: SourceSpec,
        job_id: int | None = None,
        owner: str | None = None,
        key: LaunchKey | None = None,
    ) -> JobRecord:
        """Records a new job, with the id given (cluster mode) or the next one, the token
        it belongs to (None: the owner's, made on the Unix socket) and its launch key."""
        now = time.time()
        with self._writing():
            self._db.execute("BEGIN")
            try:
                cursor = self._db.execute(
                    "INSERT INTO jobs (id, name, spec, state, submitted_at) VALUES (?, ?, ?, ?, ?)",
                    (job_id, name, json.dumps(spec_to_json(spec)), JobState.PENDING.value, now),
                )
                assert cursor.lastrowid is not None
                if owner is not None:
                    self._db.execute(
                        "INSERT INTO job_owners (job_id, token) VALUES (?, ?)",
                        (cursor.lastrowid, owner),
                    )
                if key is not None:  # (a key left by a job gone otherwise moves to this one)
                    self._db.execute(
                        "INSERT OR REPLACE INTO launch_keys (job_id, caller, key) VALUES (?, ?, ?)",
                        (cursor.lastrowid, key.caller, key.key),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return JobRecord(id=cursor.lastrowid, name=name, spec=spec, submitted_at=now)

    def launched_with(self, key: LaunchKey) -> int | None:
        """The id of the job launched with `key`, if one was (and is still recorded)."""
        row = self._db.execute(
            "SELECT job_id FROM launch_keys WHERE caller = ? AND key = ?", (key.caller, key.key)
        ).fetchone()
        return None if row is None else int(row[0])

    def owners(self) -> dict[int, str]:
        """The token each job made with one belongs to, by job id."""
        try:
            rows = self._db.execute("SELECT job_id, token FROM job_owners").fetchall()
        except sqlite3.DatabaseError as error:
            raise self._unreadable(error) from None
        return {int(job_id): str(token) for job_id, token in rows}

    def insert(self, record: JobRecord) -> None:
        """Records (or updates) a job another daemon created (cluster mode)."""
        with self._writing():
            self._db.execute(
                "INSERT OR IGNORE INTO jobs (id, name, spec, state, submitted_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    json.dumps(spec_to_json(record.spec)),
                    record.state.value,
                    record.submitted_at,
                ),
            )
            self._save(record)

    def job_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM jobs").fetchone()[0])

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._writing():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        with self._writing():
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def meta_keys(self, prefix: str) -> list[str]:
        """The keys that start with `prefix` (which holds no LIKE wildcard)."""
        rows = self._db.execute("SELECT key FROM meta WHERE key LIKE ? || '%'", (prefix,))
        return [str(row[0]) for row in rows]

    def save(self, record: JobRecord) -> None:
        with self._writing():
            self._save(record)

    def _save(self, record: JobRecord) -> None:
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
        # A full disk (the journal needs room) is StorageFull, not an internal error.
        with self._writing():
            self._db.execute("BEGIN")
            try:
                self._db.executemany("DELETE FROM events WHERE job_id=?", rows)
                self._db.executemany("DELETE FROM job_owners WHERE job_id=?", rows)
                self._db.executemany("DELETE FROM launch_keys WHERE job_id=?", rows)
                self._db.executemany("DELETE FROM jobs WHERE id=?", rows)
                self._db.execute("COMMIT")
            except BaseException:
                # A COMMIT that failed on a full disk may leave the transaction open (SQLite
                # rolls some back itself): closed here, so that a retry once there is room
                # does not fail with "cannot start a transaction within a transaction".
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def load_all(self) -> list[JobRecord]:
        try:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id").fetchall()  # noqa: S608
        except sqlite3.DatabaseError as error:
            raise self._unreadable(error) from None
        return [_record_from_row(row) for row in rows]

    def add_event(self, job_id: int, event: SourceEvent) -> None:
        with self._writing():
            self._db.execute(
                "INSERT INTO events (job_id, offset, time, message) VALUES (?, ?, ?, ?)",
                (job_id, event.offset, event.time, event.message),
            )

    def load_events(self) -> dict[int, list[SourceEvent]]:
        events: dict[int, list[SourceEvent]] = {}
        try:
            for job_id, offset, at, message in self._db.execute(
                "SELECT job_id, offset, time, message FROM events ORDER BY rowid"
            ):
                events.setdefault(job_id, []).append(SourceEvent(offset, message, at))
        except sqlite3.DatabaseError as error:
            raise self._unreadable(error) from None
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
        state=JobState.read(str(state)),
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
