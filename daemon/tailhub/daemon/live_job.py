"""A job at run time: its record, its log, who follows it, and the signal that wakes them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tailhub.daemon.acked import AckedEnd
from tailhub.daemon.domain import JobRecord, JobState, SourceEvent, SourceKind
from tailhub.daemon.errors import InvalidRequest, JobNotFound
from tailhub.daemon.log import JobLog
from tailhub.daemon.placement import HERE, Placed
from tailhub.daemon.timeindex import TimeIndex
from tailhub.daemon.wakeups import ChangeSignal

# Resume state of a job whose log file could not be created: the file at its path is not its
# own (another database's log, or planted), so it is never opened or measured.
LOG_UNCLAIMED = "log_unclaimed"


class Job:
    """Owned by the JobManager; read by subscribers.

    The log file stays closed while nobody needs it (a finished job nobody follows), so a
    daemon with thousands of old jobs holds no descriptor or memory for them.
    """

    def __init__(
        self,
        record: JobRecord,
        log_path: Path,
        window_bytes: int,
        times_path: Path,
        acked_path: Path,
        crash_points: frozenset[str] = frozenset(),
    ) -> None:
        self.record = record
        self.changed = ChangeSignal()
        self.events: list[SourceEvent] = []
        self.subscribers = 0
        self.bytes_served = 0
        self.heartbeat_tick = 0
        # An upstream connection of the fetcher is open now.
        self.upstream_open = False
        # Deleted from the daemon: a subscriber still streaming keeps the log it has open.
        self.removed = False
        # Where the job is fetched, as this daemon knows it: here (a daemon alone), or a
        # view its cluster node keeps (placement.py).
        self.placed: Placed = HERE
        self._log_path = log_path
        self._window_bytes = window_bytes
        self._log: JobLog | None = None
        self._unclaimed = bool(record.source_state.get(LOG_UNCLAIMED))
        self._closed_size = 0 if self._unclaimed else _file_size(log_path)
        self.times = TimeIndex(times_path)
        # A push job's: where the bytes its publishers were told are stored end.
        self.acked = AckedEnd(acked_path)
        self.crash_points = crash_points

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def state(self) -> JobState:
        return self.record.state

    @property
    def sealed(self) -> bool:
        return self.record.sealed

    @property
    def log_size(self) -> int:
        return self._log.size if self._log is not None else self._closed_size

    @property
    def log(self) -> JobLog:
        if self._log is None:
            if self.removed:  # its file is gone: opening would create an empty one
                raise JobNotFound(self.id)
            if self._unclaimed:
                raise InvalidRequest(f"job {self.id} has no log: {self.record.reason}")
            # A local job writes its own file, but where it is mirrored the daemon does.
            mirrored = self.placed.mirrored
            writable = mirrored or self.record.spec.kind is not SourceKind.LOCAL
            self._log = JobLog(
                self._log_path,
                self._window_bytes,
                writable=writable,
                size=self._closed_size,
                job_id=self.id,
                crash_points=self.crash_points,
                # Written only when a producer calls: no descriptor held in between.
                idle_closed=self.record.spec.kind is SourceKind.PUSH and not mirrored,
            )
        return self._log

    def observe_from(self, size: int) -> None:
        """Observes the log again from `size`: a local job's own file may hold more than
        where it was fetched stored (it ran on while its daemon was down), and the rest is
        sent."""
        if self._log is not None:
            self._log.close()
            self._log = None
        self._closed_size = size

    def release_log_if_idle(self) -> None:
        """Closes the log of a sealed job that nobody reads any more."""
        if self._log is not None and self.sealed and self.subscribers == 0:
            self._closed_size = self._log.size
            self._log.close()
            self._log = None
            self.times.release()

    def remove(self) -> None:
        """The job was deleted: wake its subscribers, close the log once nobody reads it."""
        self.removed = True
        self.changed.notify()
        self.release_log_if_idle()

    def close(self) -> None:
        if self._log is not None:
            self._closed_size = self._log.size
            self._log.close()
            self._log = None
        self.times.release()


def _file_size(path: Path) -> int:
    """The size of the job's log file; 0 for none, or for a planted symlink or FIFO (never
    followed: its size would announce bytes that are not the job's)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0
