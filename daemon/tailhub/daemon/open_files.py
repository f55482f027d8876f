"""The daemon's open-file limit: what is too low, and what a user does about it.

Every job, follower, upstream and log holds descriptors. Past the limit, `open()` and
`fork()` fail with EMFILE, and the first a user sees is a job failing with 'Too many open
files'. That error alone names no fix, so it is said with one: the limit belongs to the
daemon's process, set by whatever starts it.
"""

from __future__ import annotations

import errno
import resource

# Below this (after the soft limit was raised to the hard one) tailhubd warns at start:
# a few dozen jobs with their followers reach it.
MIN_OPEN_FILES = 1024

RAISE_OPEN_FILES = (
    "raise the daemon's limit (`ulimit -n 65536` in the shell that starts it, then `tailhub "
    "daemon restart`; LimitNOFILE= in its systemd unit) and restart it"
)


def start_failure(error: Exception) -> str:
    """The reason a job that could not start ends with: the error, and the fix when it is
    the daemon's own descriptors (or the system's) that ran out."""
    return f"cannot start the job: {error}{out_of_descriptors(error)}"


def out_of_descriptors(error: Exception) -> str:
    """`: why; the fix` when `error` is EMFILE or ENFILE, else nothing."""
    number = getattr(error, "errno", None)
    if number == errno.EMFILE:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return f": the daemon holds all {soft} descriptors it may open; {RAISE_OPEN_FILES}"
    if number == errno.ENFILE:
        return (
            ": this machine's open-file table is full (sysctl fs.file-max); close files "
            "elsewhere or raise it"
        )
    return ""
