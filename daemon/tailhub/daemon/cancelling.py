"""Cancelling jobs: which are chosen, how long the daemon waits for them to end, and what is
said of those that have not ended yet. How each one stops is its owner's (`stop`): ended at
once, by its backend, or by the daemon fetching it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tailhub.daemon.backends import Cancelling

if TYPE_CHECKING:
    from tailhub.daemon.live_job import Job


@dataclass
class CancelResult:
    cancelled: list[Job] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    already_ended: list[Job] = field(default_factory=list)


async def cancel_jobs(
    jobs: dict[int, Job],
    job_ids: list[int],
    everything: bool,
    *,
    stop: Callable[[Job], Cancelling],
    save: Callable[[Job], None],
    wait: float,
) -> CancelResult:
    """Cancels jobs (each with `stop`) and returns once those stopping here have ended, or
    `wait` seconds have passed; those not ended then are saved with the reason "cancel
    requested".

    Named jobs that are unknown or already ended are reported, not an error: the others are
    cancelled all the same.
    """
    result = CancelResult()
    chosen = {job.id: job for job in jobs.values() if everything and not job.state.terminal}
    for job_id in job_ids:
        job = jobs.get(job_id)
        if job is None:
            result.unknown.append(job_id)
        elif job.state.terminal:
            result.already_ended.append(job)
        else:
            chosen[job_id] = job
    targets = list(chosen.values())
    # Those whose fetch reports the end.
    awaited = [job for job in targets if stop(job) is Cancelling.ENDING]
    # Not an error when it takes longer (an upstream that does not let go): the job is
    # reported still ending, and ends on its own.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(_sealed(job) for job in awaited)), wait)
    for job in targets:
        if not job.state.terminal:
            job.record.reason = "cancel requested"
            save(job)
    result.cancelled = targets
    return result


async def _sealed(job: Job) -> None:
    while not job.sealed:
        await job.changed.wait()
