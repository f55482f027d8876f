"""Faults: telling a full disk from other errors, and crash points that tests can enable.

A crash point kills the daemon with SIGKILL at a named moment (between two writes that a
crash must not separate), so that a test can show the restarted daemon recovers. They are
enabled only by `TAILHUB_CRASH_AT=point[,point]`, read once in the daemon's entry point.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
from collections.abc import Mapping

CRASH_ENV = "TAILHUB_CRASH_AT"
# Between recording that a local job is launching and starting its process.
BEFORE_SPAWN = "before-spawn"
# Between starting a local job's process and recording its pid.
AFTER_SPAWN = "after-spawn"
# Between appending a command's stderr bytes to the log and saving their count.
AFTER_STDERR_APPEND = "after-stderr-append"
# Half-way through the write of an append to a log the daemon writes (a Publish's chunk):
# what a kill -9 during a large write(2) leaves, part of the chunk in the file.
MID_LOG_APPEND = "mid-log-append"
CRASH_POINTS = frozenset({BEFORE_SPAWN, AFTER_SPAWN, AFTER_STDERR_APPEND, MID_LOG_APPEND})

_SQLITE_FULL = 13  # sqlite3.SQLITE_FULL, absent from typeshed
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def crash_points_from(environ: Mapping[str, str]) -> frozenset[str]:
    """The crash points named in the environment; unknown names are an error."""
    names = frozenset(name for name in environ.get(CRASH_ENV, "").split(",") if name)
    unknown = names - CRASH_POINTS
    if unknown:
        raise ValueError(f"{CRASH_ENV}: unknown crash point(s) {', '.join(sorted(unknown))}")
    return names


STALL_ENV = "TAILHUB_CLUSTER_STALL"


def stall_from(environ: Mapping[str, str]) -> tuple[float, float] | None:
    """TAILHUB_CLUSTER_STALL=P:S (cluster mode): before renewing its leases, with
    probability P the whole daemon stops for S seconds, as a GC pause or a frozen host would
    stop it. ValueError for anything else."""
    text = environ.get(STALL_ENV)
    if text is None:
        return None
    probability, _, seconds = text.partition(":")
    try:
        stall = (float(probability), float(seconds))
    except ValueError:
        raise ValueError(f"{STALL_ENV}: P:SECONDS, not {text[:40]!r}") from None
    if not (0 <= stall[0] <= 1 and 0 <= stall[1] <= 60):
        raise ValueError(f"{STALL_ENV}: P in [0, 1], SECONDS in [0, 60]")
    return stall


def crash_at(enabled: frozenset[str], point: str) -> None:
    """Dies here, as kill -9 would, if `point` is enabled."""
    if point in enabled:
        os.kill(os.getpid(), signal.SIGKILL)


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in _FULL_ERRNOS
    if isinstance(error, sqlite3.OperationalError):
        code = getattr(error, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF == _SQLITE_FULL
    return False
