"""Faults: telling a full disk from other errors, and the faults that tests can inject.

Every fault hook lives here, each enabled only by its environment variable, read once in the
daemon's entry point and validated there (a bad value stops the start):

- `TAILHUB_CRASH_AT=point[,point]`: a crash point kills the daemon with SIGKILL at a named
  moment (between two writes that a crash must not separate), so that a test can show the
  restarted daemon recovers.
- `TAILHUB_CLUSTER_STALL=P:S[:STOP_FILE]`: the whole daemon freezes now and then before it
  renews its leases (SIGSTOP, as a GC pause or a frozen host), for the lease races; no more
  once STOP_FILE exists, so that a race can end and its job finish.
- `TAILHUB_FAIL_LOOP=name[:seconds][,...]`: an essential task raises, for the supervisor to
  stop the daemon (supervisor.py).
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import signal
import sqlite3
from collections.abc import Mapping
from typing import NamedTuple

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
# Between recording a new job in a cluster node's database and creating it in Redis.
BEFORE_CLUSTER_CREATE = "before-cluster-create"
# Between saving a job's new record in the fetching node's database and in Redis.
BEFORE_CLUSTER_SAVE = "before-cluster-save"
# Between sealing a job in the fetching node's database and storing its end in Redis.
BEFORE_CLUSTER_END = "before-cluster-end"
CRASH_POINTS = frozenset(
    {
        BEFORE_SPAWN,
        AFTER_SPAWN,
        AFTER_STDERR_APPEND,
        MID_LOG_APPEND,
        BEFORE_CLUSTER_CREATE,
        BEFORE_CLUSTER_SAVE,
        BEFORE_CLUSTER_END,
    }
)

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


class Stall(NamedTuple):
    """How the daemon stalls (TAILHUB_CLUSTER_STALL): with `probability`, for `seconds`,
    until `stop_file` exists (never, without one)."""

    probability: float
    seconds: float
    stop_file: str | None = None


def stall_from(environ: Mapping[str, str]) -> Stall | None:
    """TAILHUB_CLUSTER_STALL=P:S[:STOP_FILE] (cluster mode): before renewing its leases, with
    probability P the whole daemon stops for S seconds, as a GC pause or a frozen host would
    stop it (see `stall`), until STOP_FILE exists. ValueError for anything else."""
    text = environ.get(STALL_ENV)
    if text is None:
        return None
    probability, _, rest = text.partition(":")
    seconds, _, stop_file = rest.partition(":")
    try:
        stall = Stall(float(probability), float(seconds), stop_file or None)
    except ValueError:
        raise ValueError(f"{STALL_ENV}: P:SECONDS[:STOP_FILE], not {text[:40]!r}") from None
    if not (0 <= stall.probability <= 1 and 0 <= stall.seconds <= 60):
        raise ValueError(f"{STALL_ENV}: P in [0, 1], SECONDS in [0, 60]")
    return stall


# The freeze is a child's doing: it stops this process (every thread, as a frozen host
# would), then lets it go on; the daemon awaits the child, so the renewal comes after.
_FREEZE = 'kill -STOP "$1" && sleep "$2"; kill -CONT "$1"'


def _stopped(setting: Stall) -> bool:
    # One stat per renewal, and only in a test's daemon.
    return setting.stop_file is not None and os.path.exists(setting.stop_file)


async def stall(setting: Stall | None) -> None:
    """With TAILHUB_CLUSTER_STALL=P:S, with probability P: the whole process stops for S
    seconds (SIGSTOP, then SIGCONT from a child), never a sleep that blocks the event loop.
    Nothing without it, or once its stop file exists."""
    if setting is None or random.random() >= setting.probability or _stopped(setting):
        return
    child = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        _FREEZE,
        "stall",
        str(os.getpid()),
        f"{setting.seconds:.3f}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await child.wait()


FAIL_LOOP_ENV = "TAILHUB_FAIL_LOOP"
# The essential tasks (supervisor.py), by the names a fault gives: the supervisor runs no
# task whose name is not here, so that every one can be failed on purpose by a test.
HEARTBEAT = "heartbeat"
RETENTION = "retention"
HEALTH = "health"
CERTIFICATE_CHECK = "certificate-check"
KEEP_ALIVE = "keep-alive"
TAKE_OVER = "take-over"
RECORD_SYNC = "record-sync"
MIRROR = "mirror"
CONNECTION_CAP = "connection-cap"
HEAP_TRIM = "heap-trim"
ESSENTIAL_TASKS = frozenset(
    {
        *(HEARTBEAT, RETENTION, HEALTH, CERTIFICATE_CHECK, KEEP_ALIVE, TAKE_OVER, RECORD_SYNC),
        *(MIRROR, CONNECTION_CAP, HEAP_TRIM),
    }
)


def failing_loops_from(environ: Mapping[str, str]) -> tuple[tuple[str, float], ...]:
    """TAILHUB_FAIL_LOOP=NAME[:SECONDS][,...]: each named essential task (supervisor.py)
    raises once the daemon serves, or SECONDS later, in place of running. Unknown names
    and bad delays are a ValueError. Read once, in the daemon's entry point."""
    failing: dict[str, float] = {}
    for item in environ.get(FAIL_LOOP_ENV, "").split(","):
        if not item:
            continue
        name, _, delay = item.partition(":")
        if name not in ESSENTIAL_TASKS:
            known = ", ".join(sorted(ESSENTIAL_TASKS))
            raise ValueError(f"{FAIL_LOOP_ENV}: unknown task {name[:40]!r} (known: {known})")
        try:
            seconds = float(delay or "0")
        except ValueError:
            raise ValueError(f"{FAIL_LOOP_ENV}: NAME[:SECONDS], not {item[:40]!r}") from None
        if not 0 <= seconds <= 3600:
            raise ValueError(f"{FAIL_LOOP_ENV}: SECONDS in [0, 3600], not {delay[:40]!r}")
        failing[name] = seconds
    return tuple(sorted(failing.items()))


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
