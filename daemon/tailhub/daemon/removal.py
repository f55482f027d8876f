"""Removing ended jobs: which ones (named, ended before a time, or past the retention policy)
and how (database rows first, then the log and the run directory)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.errors import StorageFull
from tailhub.daemon.live_job import Job
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.sizes import shown_size
from tailhub.daemon.store import JobStore

# How often the daemon applies the retention policy.
RETENTION_INTERVAL = 3600.0

logger = logging.getLogger(__name__)

# A job's id, its files (log, times, acknowledged end) and its run directory.
_JobFiles = tuple[int, tuple[Path, ...], Path]


@dataclass
class RemoveResult:
    removed: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    not_ended: list[int] = field(default_factory=list)
    bytes_freed: int = 0
    # The deletion of their files, under way on a worker thread (None: done, or nothing).
    deleting: asyncio.Future[None] | None = None


def choose(
    jobs: Mapping[int, Job], job_ids: Iterable[int], ended_before: float | None
) -> tuple[list[Job], RemoveResult]:
    """The jobs a RemoveJobs call names (each must have ended) or that ended before a time."""
    result = RemoveResult()
    chosen: dict[int, Job] = {}
    for job_id in dict.fromkeys(job_ids):
        job = jobs.get(job_id)
        if job is None:
            result.unknown.append(job_id)
        elif not job.sealed:  # not ended, or its last bytes are still being drained
            result.not_ended.append(job_id)
        else:
            chosen[job_id] = job
    if ended_before is not None:
        for job in jobs.values():
            if job.sealed and job.record.ended_at < ended_before:
                chosen[job.id] = job
    return list(chosen.values()), result


@dataclass
class Expired:
    """The ended jobs a retention pass removes, by the rule that removes each."""

    # Beyond --max-ended-jobs, past --retention, beyond --retain-logs.
    by_count: list[Job] = field(default_factory=list)
    by_age: list[Job] = field(default_factory=list)
    by_size: list[Job] = field(default_factory=list)

    @property
    def jobs(self) -> list[Job]:
        return [*self.by_count, *self.by_age, *self.by_size]


def expired(
    jobs: Iterable[Job],
    now: float,
    max_age: float | None,
    max_count: int | None,
    max_log_bytes: int | None = None,
) -> Expired:
    """The retention policy: the oldest ended jobs beyond `max_count`, those past `max_age`,
    and then the oldest until the logs of the ended jobs left hold `max_log_bytes` at most."""
    ended = sorted(
        (job for job in jobs if job.sealed), key=lambda job: (job.record.ended_at, job.id)
    )
    doomed = Expired()
    if max_count is not None:
        doomed.by_count = ended[: max(len(ended) - max_count, 0)]
    kept = ended[len(doomed.by_count) :]
    if max_age is not None:
        doomed.by_age = [job for job in kept if job.record.ended_at < now - max_age]
        # (ended_at grows along `kept`: those past the age are its first ones.)
        kept = kept[len(doomed.by_age) :]
    if max_log_bytes is not None:
        held = sum(job.log_size for job in kept)
        for job in kept:
            if held <= max_log_bytes:
                break
            doomed.by_size.append(job)
            held -= job.log_size
    return doomed


def summary(doomed: Expired, config: DaemonConfig) -> str:
    """One line saying what a retention pass removed and by which rule (the daemon's log)."""
    jobs = doomed.jobs
    size = sum(job.log_size for job in jobs)
    rules = [
        (doomed.by_count, f"beyond --max-ended-jobs {config.max_ended_jobs}"),
        (doomed.by_age, f"past --retention {_duration(config.retention_seconds or 0)}"),
        (doomed.by_size, f"beyond --retain-logs {shown_size(config.retain_log_bytes or 0)}"),
    ]
    why = ", ".join(f"{len(chosen)} {rule}" for chosen, rule in rules if chosen)
    ids = _ids([job.id for job in jobs])
    count = f"{len(jobs)} ended job{'' if len(jobs) == 1 else 's'}"
    return f"removed {count} ({shown_size(size)} of logs; {why}): {ids}"


def _ids(ids: list[int], shown: int = 20) -> str:
    text = ", ".join(map(str, sorted(ids)[:shown]))
    return text if len(ids) <= shown else f"{text} and {len(ids) - shown} more"


def _duration(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds // length:.0f}{unit}"
    return f"{seconds:g}s"


def delete(
    doomed: list[Job],
    jobs: dict[int, Job],
    store: JobStore,
    paths: StatePaths,
    result: RemoveResult,
) -> None:
    """Deletes jobs from the database, from `jobs`, and their files; adds them to `result`."""
    if not doomed:
        return
    files: list[_JobFiles] = [
        (
            job.id,
            (paths.job_log(job.id), paths.job_times(job.id), paths.job_acked(job.id)),
            paths.run_dir(job.id),
        )
        for job in doomed
    ]
    try:
        # The database first: a crash after it leaves only files nobody refers to.
        store.delete([job.id for job in doomed])
    except StorageFull as error:
        # Even a delete needs room in the database's journal. On a full disk, removing
        # jobs is how a user frees space (jobs rm, jobs prune), so it must not fail then:
        # the files go first (here, at once: the space is needed now) and the records
        # after. A crash between leaves records of ended jobs whose logs are gone: they
        # read as empty, and their removal is what was asked anyway.
        logger.warning(
            "removing %d ended jobs: %s; deleting their files first to make room",
            len(doomed),
            error,
        )
        _delete_files(files)
        store.delete([job.id for job in doomed])
        files = []
    for job in doomed:
        del jobs[job.id]
        result.bytes_freed += job.log_size
        job.remove()
        result.removed.append(job.id)
    logger.info("removed %d ended jobs", len(doomed))
    if not files:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _delete_files(files)
        return
    # Thousands of unlinks and rmtrees would stall every client: a worker thread does them
    # (the records are gone already, so nothing refers to these files any more).
    result.deleting = loop.run_in_executor(None, _delete_files, files)


def _delete_files(files: list[_JobFiles]) -> None:
    for job_id, job_files, run_dir in files:
        for path in job_files:
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                logger.warning("job %d: cannot delete %s: %s", job_id, path, error)
        # A symlink planted here is not followed: rmtree refuses it (and errors are ignored).
        shutil.rmtree(run_dir, ignore_errors=True)
