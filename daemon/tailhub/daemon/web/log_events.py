"""Jobs' logs as Server-Sent Events: `/api/events/jobs/{id}/log` and `/api/events/logs`.

Each job followed is one `fanout.stream_log` cursor, as a gRPC Subscribe is: its bytes are read
from the job's log under the daemon-wide budget (the grant is given back only once the event
is written), never fetched again, never copied per tab. A chunk's SSE `id:` is the byte offset
after it (`3:O3,4:O4` for several jobs), so a browser that reconnects with `Last-Event-ID`
resumes exactly, and so does a page that opens a stream anew with `?offset=` (`?offsets=`). A
stream's first event per job is an empty chunk at its start. The cursor is let go the moment
the browser goes away (the handler is cancelled) or the job's log is sealed.

The session is checked again at least every heartbeat interval, busy or idle: a revoked
token's stream ends with the `error` event "the session has ended" however often its jobs write.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tailhub.daemon.domain import SourceEvent
from tailhub.daemon.errors import (
    DaemonError,
    DaemonStopping,
    InvalidRequest,
    TokenNotAccepted,
)
from tailhub.daemon.fanout import ChunkRange, LogItem, ReadFrom, stream_log
from tailhub.daemon.items import Ended
from tailhub.daemon.line_filter import LineFilter
from tailhub.daemon.live_job import Job
from tailhub.daemon.web import resume
from tailhub.daemon.web.job_list import event_json
from tailhub.daemon.web.sessions import Identity, still_valid
from tailhub.daemon.web.sse import HEARTBEAT, event, open_stream
from tailhub.daemon.web.state import (
    WebState,
    identity_of,
    job_id_of,
    json_error,
    state_of,
)

logger = logging.getLogger(__name__)

MAX_GLOB_CHARS = 256


@dataclass
class Followed:
    """One job of a stream: its cursor, where the browser has it so far, its line filter."""

    job: Job
    offset: int
    stream: AsyncGenerator[LogItem, None]
    line_filter: LineFilter | None


@dataclass(frozen=True)
class Plan:
    """What a request asks for, checked: the jobs, where each starts, the patterns."""

    job_ids: list[int]
    tail_lines: int
    resumed: Mapping[int, int]
    grep: list[str]
    exclude: list[str]
    multi: bool


async def job_log(request: web.Request) -> web.StreamResponse:
    """`GET /api/events/jobs/{id}/log?tail_lines=N&offset=O&grep=RE&exclude=RE`."""
    job_id = job_id_of(request)

    def plan() -> Plan:
        if job_id is None:
            raise InvalidRequest("no such job")
        offset = resume.parse_offset(*_resumed_at(request, "offset"))
        return Plan(
            [job_id],
            resume.parse_tail_lines(request.query.get("tail_lines")),
            {} if offset is None else {job_id: offset},
            request.query.getall("grep", []),
            request.query.getall("exclude", []),
            multi=False,
        )

    return await _serve(request, plan)


async def logs(request: web.Request) -> web.StreamResponse:
    """`GET /api/events/logs?ids=3,4,5` or `?name=GLOB` (at most 50 jobs), `&offsets=3:O3,...`
    (jobs not named there start at their last `tail_lines` lines)."""
    state = state_of(request)

    def plan() -> Plan:
        ids_text, glob = request.query.get("ids"), request.query.get("name")
        if ids_text:
            ids = resume.parse_ids(ids_text)
        elif glob:
            ids = _named(state, glob)
        else:
            raise InvalidRequest("name the jobs: ?ids=3,4,5 or ?name=GLOB")
        return Plan(
            ids,
            resume.parse_tail_lines(request.query.get("tail_lines")),
            resume.parse_offsets(*_resumed_at(request, "offsets")) or {},
            request.query.getall("grep", []),
            request.query.getall("exclude", []),
            multi=True,
        )

    return await _serve(request, plan)


def _resumed_at(request: web.Request, parameter: str) -> tuple[str | None, str]:
    """Where the browser has the log so far, and what said so: `Last-Event-ID`, else the
    query's `offset=` (`offsets=` for several jobs), which a page sets when it opens a new
    stream (a tab shown again after its stream was let go: an EventSource made anew cannot
    send the header).

    The header wins: EventSource reconnects by itself (a daemon restart, a dropped
    connection) to the very URL it was made with, query and all, adding Last-Event-ID, the
    place after the last event it got since. The query says where that stream began; the
    header is where it got to, never before it.
    """
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        return header, "Last-Event-ID"
    return request.query.get(parameter), parameter


def _named(state: WebState, glob: str) -> list[int]:
    """The newest MAX_MULTI_JOBS jobs whose names match `glob`, oldest first."""
    if len(glob) > MAX_GLOB_CHARS:
        raise InvalidRequest(f"a name pattern is at most {MAX_GLOB_CHARS} characters")
    newest, _ = state.manager.newest(state.manager.job_count)
    found = [job.id for job in newest if fnmatch.fnmatchcase(job.record.name, glob)]
    if not found:
        raise InvalidRequest(f"no job's name matches {glob!r}")
    return sorted(found[: resume.MAX_MULTI_JOBS])


async def _serve(request: web.Request, plan: Callable[[], Plan]) -> web.StreamResponse:
    """Takes a stream slot (429 past a limit), then streams; anything refused is an `error`
    event, after which the stream closes."""
    state = state_of(request)
    key = identity_of(request).key
    refusal = state.slots.refusal(key)
    if refusal is not None:
        return json_error(429, refusal)
    with state.slots.held(key):
        response = await open_stream(request)
        try:
            await _stream(request, response, plan())
        except (ValueError, DaemonError) as error:
            if not isinstance(error, DaemonStopping):  # (it ends the stream: reconnect)
                message = error.message() if isinstance(error, DaemonError) else str(error)
                await response.write(event("error", {"message": message}))
        except ConnectionError:  # the browser went away mid-write
            pass
        return response


async def _stream(request: web.Request, response: web.StreamResponse, plan: Plan) -> None:
    state = state_of(request)
    followed: dict[int, Followed] = {}
    try:
        for job_id in plan.job_ids:
            followed[job_id] = await _follow(state, job_id, plan)
        interval = state.settings.heartbeat_interval
        writer = _Writer(state, response, followed, plan.multi, identity_of(request), interval)
        await writer.start()
        if len(followed) == 1:
            ((job_id, each),) = followed.items()
            await _pump_one(job_id, each, writer.write, interval, writer.heartbeat)
        else:
            await _pump(followed, writer.write, interval, writer.heartbeat)
    finally:
        for each in followed.values():
            await each.stream.aclose()


async def _follow(state: WebState, job_id: int, plan: Plan) -> Followed:
    """A cursor on the job, from the offset resumed or the last `tail_lines` lines."""
    manager = state.manager
    job = manager.get(job_id)
    line_filter = LineFilter.compile(plan.grep, plan.exclude)
    resumed = plan.resumed.get(job_id)
    await manager.prepare_read(job, catch_up=resumed is None)
    start = (
        ReadFrom(offset=resumed) if resumed is not None else ReadFrom(tail_lines=plan.tail_lines)
    )
    # Resolved here, so that the stream's id holds every job's place from the first event.
    offset = await start.resolve(job, manager.scans)
    stream = stream_log(
        job,
        ReadFrom(offset=offset),
        follow=True,
        max_chunk=state.config.max_chunk_bytes,
        stopping=lambda: manager.stopping,
        budget=state.budget,
        scans=manager.scans,
    )
    return Followed(job, offset, stream, line_filter)


Write = Callable[[int, LogItem], Awaitable[bool]]


async def _pump_one(
    job_id: int,
    each: Followed,
    write: Write,
    heartbeat_interval: float,
    heartbeat: Callable[[], Awaitable[bool]],
) -> None:
    """One job's cursor, read by one task for the whole stream: an item costs one pass of
    the loop, as a gRPC Subscribe's does (a task per item, as `_pump` makes, tripled the
    latency of 1000 SSE followers: bench fanout). A heartbeat after `heartbeat_interval`
    seconds without an item; ends when the cursor does, or when `write` or `heartbeat` say so.
    (A heartbeat and an event never interleave: each is one write to the transport.)"""
    last_write = time.monotonic()

    async def write_all() -> None:
        nonlocal last_write
        async for item in each.stream:
            if not await write(job_id, item):
                return
            last_write = time.monotonic()

    reader = asyncio.ensure_future(write_all())
    try:
        while True:
            quiet = time.monotonic() - last_write
            done, _ = await asyncio.wait({reader}, timeout=max(0.0, heartbeat_interval - quiet))
            if done:
                reader.result()
                return
            if time.monotonic() - last_write >= heartbeat_interval:
                if not await heartbeat():
                    return
                last_write = time.monotonic()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _pump(
    followed: Mapping[int, Followed],
    write: Write,
    heartbeat_interval: float,
    heartbeat: Callable[[], Awaitable[bool]],
) -> None:
    """Takes the next item of every job's cursor as it comes and writes it; each cursor is
    asked for its next item only once the last one is written (its budget grant is given
    back then). A heartbeat after `heartbeat_interval` seconds without an item; ends when
    every cursor has, or when `write` or `heartbeat` say so."""
    pending: dict[asyncio.Future[LogItem], int] = {
        asyncio.ensure_future(each.stream.__anext__()): job_id for job_id, each in followed.items()
    }
    try:
        while pending:
            done, _ = await asyncio.wait(
                pending, timeout=heartbeat_interval, return_when=asyncio.FIRST_COMPLETED
            )
            if not done and not await heartbeat():
                return
            for future in done:
                job_id = pending.pop(future)
                try:
                    item = future.result()
                except StopAsyncIteration:
                    continue
                if await write(job_id, item):
                    pending[asyncio.ensure_future(followed[job_id].stream.__anext__())] = job_id
    finally:
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class _Writer:
    """Writes a stream's items as events; keeps each job's offset so far."""

    def __init__(
        self,
        state: WebState,
        response: web.StreamResponse,
        followed: Mapping[int, Followed],
        multi: bool,
        identity: Identity,
        check_every: float,
    ) -> None:
        self._state = state
        self._response = response
        self._followed = followed
        self._multi = multi
        self._identity = identity
        self._check_every = check_every
        self._checked_at = time.monotonic()

    def _check_session(self, *, now: bool) -> None:
        """TokenNotAccepted (an `error` event, then the stream ends: _serve) once the
        session has ended (its token revoked); asked at most every `check_every` seconds
        unless `now`."""
        at = time.monotonic()
        if not now and at - self._checked_at < self._check_every:
            return
        self._checked_at = at
        if not still_valid(self._identity, self._state.tokens):
            raise TokenNotAccepted("the session has ended")

    async def heartbeat(self) -> bool:
        """A comment line, once the session is found still valid."""
        self._check_session(now=True)
        await self._response.write(HEARTBEAT)
        return True

    async def start(self) -> None:
        """An empty chunk per job at its start, with the stream's id: the page knows where
        each job begins before any byte comes, and a reconnect (or a tab shown again) before
        then resumes there rather than at the tail again."""
        for each in self._followed.values():
            await self._piece(each, each.offset, b"")

    async def write(self, job_id: int, item: LogItem) -> bool:
        """Writes one item; False once the job's stream is over. A busy stream's session is
        checked here as an idle one's is at each heartbeat."""
        self._check_session(now=False)
        each = self._followed[job_id]
        if isinstance(item, ChunkRange):
            await self._chunk(each, item)
        elif isinstance(item, SourceEvent):
            await self._response.write(event("event", self._tagged(job_id, event_json(item))))
        elif isinstance(item, Ended):
            await self._end(each, item)
            return False
        return True

    def _tagged(self, job_id: int, data: dict[str, Any]) -> dict[str, Any]:
        return {"job": str(job_id), **data} if self._multi else data

    def _event_id(self) -> str:
        if not self._multi:
            return str(next(iter(self._followed.values())).offset)
        return resume.format_offsets({job_id: f.offset for job_id, f in self._followed.items()})

    async def _chunk(self, each: Followed, chunk: ChunkRange) -> None:
        job = each.job
        size = chunk.end - chunk.offset
        job.bytes_served += size
        counts = self._state.manager.counts
        counts.bytes_served += size
        counts.lag.observe(job.log_size - chunk.end)
        if each.line_filter is None and not self._multi:
            each.offset = chunk.end
            await self._response.write(self._cached_chunk(job, chunk))
            return
        data = job.log.read(chunk.offset, size)
        if each.line_filter is None:
            await self._piece(each, chunk.offset, data)
            return
        pacer = self._state.filter_pacer
        for offset, piece in await pacer.judge(each.line_filter, chunk.offset, data):
            await self._piece(each, offset, piece)

    async def _piece(self, each: Followed, offset: int, data: bytes) -> None:
        each.offset = offset + len(data)
        payload = self._tagged(each.job.id, {"offset": str(offset), "data": _b64(data)})
        await self._response.write(event("chunk", payload, self._event_id()))

    def _cached_chunk(self, job: Job, chunk: ChunkRange) -> bytes:
        """A single job's chunk event, encoded once for every tab at the same place."""
        key = (job.id, chunk.offset, chunk.end)
        cache = self._state.events
        encoded = cache.get(key)
        if encoded is None:
            data = job.log.read(chunk.offset, chunk.end - chunk.offset)
            body = f'{{"offset":"{chunk.offset}","data":"{_b64(data)}"}}'
            encoded = event("chunk", body, str(chunk.end))
            cache.put(key, encoded)
        return encoded

    async def _end(self, each: Followed, ended: Ended) -> None:
        if each.line_filter is not None:
            for offset, piece in each.line_filter.flush():
                await self._piece(each, offset, piece)
        data = {
            "state": ended.state.value,
            "exit_code": ended.exit_code,
            "reason": ended.reason,
            "log_size": str(ended.log_size),
        }
        await self._response.write(event("end", self._tagged(each.job.id, data)))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
