"""What a new job must pass before the daemon takes it: a usable source, its token's quota,
the descriptors it would hold, and a log file of its own."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tailhub.daemon.domain import (
    CommandSpec,
    FileSpec,
    PushSpec,
    SkyPilotSpec,
    SourceKind,
    SourceSpec,
    backend_of,
)
from tailhub.daemon.errors import InvalidRequest, StorageFull
from tailhub.daemon.faults import is_disk_full
from tailhub.daemon.identity import highest_job_id
from tailhub.daemon.open_files import out_of_descriptors
from tailhub.daemon.paths import StatePaths, shown
from tailhub.daemon.quotas import DescriptorBudget, JobQuota
from tailhub.daemon.store import JobStore

logger = logging.getLogger(__name__)

# Descriptors a job holds while it runs, by source (its log and its upstream; a push job's
# log is opened per call, and a local job writes its own): what admission counts.
DESCRIPTORS_HELD = {
    SourceKind.FILE: 2,  # the file followed, the log
    SourceKind.COMMAND: 4,  # stdout and stderr pipes, the child, the log
    SourceKind.SKYPILOT: 4,  # a `sky jobs logs` command's
    SourceKind.LOCAL: 2,
}


def admit(
    quota: JobQuota,
    descriptors: DescriptorBudget,
    spec: SourceSpec,
    owner: str | None,
    *,
    launched: bool,
) -> None:
    """Refuses a job past its token's quota, or one that would hold descriptors the daemon
    keeps for itself; the owner's launches are never refused (they are what the reserve is
    for)."""
    quota.check(owner)
    if launched and owner is None:
        return
    kind = spec.kind
    descriptors.admit(kind.value, DESCRIPTORS_HELD.get(kind, 0))


# Jobs resumed at start open their descriptors once the start is done: until a count this
# long after, they are counted on top of it.
RESUMED_OPEN_SECONDS = 10.0


def readmit(descriptors: DescriptorBudget, spec: SourceSpec, owner: str | None) -> None:
    """A job resumed at start counts the descriptors it will hold as a new one does (the
    owner's launches excepted): under a lower limit than it was taken under, it fails with the
    reason (OutOfDescriptors) instead of taking those the daemon keeps for its own work (with
    400 file jobs resumed under a limit of 256, the daemon could not bind its socket and did
    not start)."""
    if owner is None and backend_of(spec):
        return
    descriptors.admit(
        spec.kind.value, DESCRIPTORS_HELD.get(spec.kind, 0), opens_within=RESUMED_OPEN_SECONDS
    )


def claim_log(path: Path) -> tuple[str, bool] | None:
    """Creates a new job's log file. When it cannot, the reason and whether the disk is full:
    the file already there (another database's log, or something planted) is never read as
    this job's log."""
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError as error:
        if isinstance(error, FileExistsError) and path.is_symlink():
            reason = (
                f"refusing {shown(path)}: it is a symbolic link, not a file tailhub made; "
                "move it aside"
            )
        elif isinstance(error, FileExistsError):
            reason = (
                f"refusing {shown(path)}: it already exists and is not this job's log "
                "(another database's, or planted); move it aside"
            )
        else:
            reason = f"cannot create its log {shown(path)}: {error.strerror}"
            reason += out_of_descriptors(error)
        return reason, is_disk_full(error)
    os.close(fd)
    return None


def validate_attach(spec: SourceSpec) -> None:
    """Refuses a source an attach cannot follow (the daemon checks what it can now)."""
    if isinstance(spec, FileSpec):
        path = Path(spec.path)
        if not path.is_absolute():
            raise InvalidRequest(f"file path must be absolute: {spec.path}")
        if not path.exists():
            raise InvalidRequest(f"no such file: {spec.path}")
        if path.is_dir():
            raise InvalidRequest(f"{spec.path} is a directory, not a file")
        if not path.is_file():
            # A FIFO or device would block the reader; only regular files are followed.
            raise InvalidRequest(f"{spec.path} is not a regular file")
        if not os.access(path, os.R_OK):
            raise InvalidRequest(f"cannot read {spec.path}: permission denied")
    elif isinstance(spec, CommandSpec):
        if not spec.argv or not spec.argv[0]:
            raise InvalidRequest("command is empty")
    elif isinstance(spec, SkyPilotSpec):
        if spec.managed_job_id is None or spec.task_yaml:
            raise InvalidRequest("attach takes a SkyPilot managed job by its id")
    elif not isinstance(spec, PushSpec):
        raise InvalidRequest("attach takes a file, command, push or skypilot source")


def keep_ids_of_files(paths: StatePaths, store: JobStore) -> None:
    """Job ids are never given again (README): not even those a database restored
    from an older copy has no record of, whose logs are still here."""
    taken = highest_job_id(paths)
    try:
        if store.keep_ids_above(taken):
            logger.warning(
                "logs/ or runs/ hold files of job %d, which the database does not know "
                "(an older copy restored?): new jobs get ids above it",
                taken,
            )
    except StorageFull as error:
        # Then a launch whose id has a log already fails with that reason (_claim_log).
        logger.warning("job ids above %d not reserved: %s", taken, error)
