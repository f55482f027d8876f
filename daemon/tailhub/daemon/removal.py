"""Removing ended jobs: which ones (named, ended before a time, or past the retention policy)
and how (database rows first, then the log and the run directory)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tailhub.daemon.job import Job
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.store import JobStore

# How often the daemon applies the retention policy.
RETENTION_INTERVAL = 3600.0

logger = logging.getLogger(__name__)


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


def expired(
    jobs: Iterable[Job], now: float, max_age: float | None, max_count: int | None
) -> list[Job]:
    """The retention policy: the oldest ended jobs beyond `max_count`, and those past `max_age`."""
    ended = sorted(
        (job for job in jobs if job.sealed), key=lambda job: (job.record.ended_at, job.id)
    )
    doomed = ended[: max(len(ended) - max_count, 0)] if max_count is not None else []
    if max_age is not None:
        doomed += [job for job in ended[len(doomed) :] if job.record.ended_at < now - max_age]
    return doomed


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
    # The database first: a crash after it leaves only files nobody refers to.
    store.delete([job.id for job in doomed])
    files: list[tuple[int, tuple[Path, ...], Path]] = []
    for job in doomed:
        del jobs[job.id]
        result.bytes_freed += job.log_size
        job.remove()
        files.append(
            (
                job.id,
                (paths.job_log(job.id), paths.job_times(job.id), paths.job_acked(job.id)),
                paths.run_dir(job.id),
            )
        )
        result.removed.append(job.id)
    logger.info("removed %d ended jobs", len(doomed))
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _delete_files(files)
        return
    # Thousands of unlinks and rmtrees would stall every client: a worker thread does them
    # (the records are gone already, so nothing refers to these files any more).
    result.deleting = loop.run_in_executor(None, _delete_files, files)


def _delete_files(files: list[tuple[int, tuple[Path, ...], Path]]) -> None:
    for job_id, job_files, run_dir in files:
        for path in job_files:
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                logger.warning("job %d: cannot delete %s: %s", job_id, path, error)
        # A symlink planted here is not followed: rmtree refuses it (and errors are ignored).
        shutil.rmtree(run_dir, ignore_errors=True)
