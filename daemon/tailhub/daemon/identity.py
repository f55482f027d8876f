"""Which database the logs belong to: job ids are never reused on top of older logs.

The database holds a random instance id; `logs/` holds a marker file with the id of the
database that owns its logs. A database that is new (empty, or replaced) next to logs or runs
of another one is refused, so that new job 2 never serves old job 2's bytes.
"""

from __future__ import annotations

import os

from tailhub.daemon.errors import UnusableState
from tailhub.daemon.paths import StatePaths, shown
from tailhub.daemon.statedir import read_state_file

MARKER_NAME = ".database-id"


def check_logs_belong(paths: StatePaths, instance_id: str, new_database: bool) -> None:
    """Refuses (UnusableState) logs that belong to another database; marks them ours."""
    marker = paths.logs / MARKER_NAME
    try:
        # Never through a planted link, never blocking on a FIFO.
        owner: str | None = read_state_file(marker).strip()
    except FileNotFoundError:
        owner = None
    logs, runs, database = shown(paths.logs), shown(paths.runs), shown(paths.database)
    if owner is not None and owner != instance_id:
        raise UnusableState(
            f"{logs} belongs to another database than {database}; "
            f"move {logs} and {runs} aside (or restore that database), then start again"
        )
    if owner is not None:
        return
    if new_database and (_has_entries(paths.logs) or _has_entries(paths.runs)):
        raise UnusableState(
            f"database {database} is new but {logs} or {runs} holds jobs of "
            f"an older one; move them aside (or restore that database), then start again"
        )
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{instance_id}\n".encode())
    finally:
        os.close(fd)


def _has_entries(directory: os.PathLike[str]) -> bool:
    with os.scandir(directory) as entries:
        return any(entry.name != MARKER_NAME for entry in entries)


# Longer names are not ids the daemon made (SQLite's ids stop at 2**63 - 1).
_MAX_ID_DIGITS = 15


def highest_job_id(paths: StatePaths) -> int:
    """The highest job id a file in logs/ or runs/ is named after (`7.log`, `7.times`,
    `runs/7`); 0 for none. A database restored from an older copy does not know the jobs
    created since, but their files are here, and their ids must not be given again."""
    highest = 0
    for directory in (paths.logs, paths.runs):
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    head = entry.name.partition(".")[0]
                    if head.isascii() and head.isdigit() and len(head) <= _MAX_ID_DIGITS:
                        highest = max(highest, int(head))
        except FileNotFoundError:
            continue
    return highest
