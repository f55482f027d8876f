"""`/api/jobs/{id}/raw`: a job's log as a file, whole, or gzip-compressed on the fly.

Streamed a piece at a time, each piece taken from the daemon-wide budget until it is written:
a download never holds the log in memory, and a stalled one holds one piece. It sends the log
as it is when the request comes (a running job's later bytes are not waited for). Counted
among the session's streams.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from tailhub.daemon.errors import DaemonError, JobNotFound
from tailhub.daemon.live_job import Job
from tailhub.daemon.web.state import WebState, identity_of, job_id_of, json_error, state_of

PIECE_BYTES = 256 * 1024


async def raw(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    job_id = job_id_of(request)
    if job_id is None:
        return json_error(404, "no such job")
    try:
        job = state.manager.get(job_id)
    except JobNotFound as error:
        return json_error(404, str(error))
    compressed = request.query.get("gzip", "") in ("1", "true", "yes")
    key = identity_of(request).key
    refusal = state.slots.refusal(key)
    if refusal is not None:
        return json_error(429, refusal)
    name = f"job-{job_id}.log" + (".gz" if compressed else "")
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/gzip" if compressed else "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        }
    )
    with state.slots.held(key):
        await state.manager.prepare_read(job, catch_up=True)
        if not compressed:
            response.content_length = job.log_size
        await response.prepare(request)
        # A reader like a follower: the log stays open while it reads, and closes after.
        job.subscribers += 1
        try:
            await _send(state, job, response, compressed)
        except (ConnectionError, DaemonError):
            # Gone, or the job was removed meanwhile: a truncated download, as any
            # broken transfer.
            pass
        finally:
            job.subscribers -= 1
            job.release_log_if_idle()
    return response


async def _send(state: WebState, job: Job, response: web.StreamResponse, compressed: bool) -> None:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31) if compressed else None
    offset, end = 0, job.log_size
    while offset < end:
        grant = await state.budget.acquire(min(PIECE_BYTES, end - offset))
        try:
            data = job.log.read(offset, grant.size)
            if not data:  # (the log holds less than it said: changed behind the daemon)
                break
            offset += len(data)
            if packer is not None:
                # Off the loop: compressing 256 KiB takes milliseconds.
                data = await asyncio.to_thread(packer.compress, data)
            await response.write(data)
        finally:
            state.budget.release(grant)
    if packer is not None:
        await response.write(packer.flush())
    await response.write_eof()
