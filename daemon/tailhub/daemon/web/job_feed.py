"""`/api/events/jobs`: the job list, live.

One feed for every tab: while any tab watches, a task looks at the newest jobs once a
`interval` and keeps what changed (state, exit code, followers, log size) as a numbered batch
of events; each tab's stream is a cursor into the last few batches, and one that fell further
behind gets the whole list again. Sizes change at most once per interval, whatever the jobs
write. The task stops with the last tab.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from tailhub.daemon.manager import JobManager
from tailhub.daemon.wakeups import ChangeSignal
from tailhub.daemon.web.job_list import MAX_LISTED, job_json
from tailhub.daemon.web.sessions import still_valid
from tailhub.daemon.web.sse import HEARTBEAT, event, open_stream
from tailhub.daemon.web.state import identity_of, json_error, state_of

logger = logging.getLogger(__name__)

INTERVAL = 1.0
# Batches kept for tabs that are behind: a tab further back gets the whole list instead.
KEPT_BATCHES = 32

Event = tuple[str, dict[str, Any]]


class JobFeed:
    def __init__(self, manager: JobManager, interval: float = INTERVAL) -> None:
        self._manager = manager
        self._interval = interval
        # What each listed job looked like at the last look: id -> (state, code, followers, size)
        self._seen: dict[int, tuple[Any, ...]] = {}
        self._batches: deque[tuple[int, list[Event]]] = deque(maxlen=KEPT_BATCHES)
        self._number = 0
        self._changed = ChangeSignal()
        self._watchers = 0
        self._task: asyncio.Task[None] | None = None

    def listing(self) -> list[dict[str, Any]]:
        newest, _ = self._manager.newest(MAX_LISTED)
        return [job_json(job) for job in newest]

    async def events(self) -> AsyncGenerator[Event, None]:
        """The whole list first, then what changes, for as long as the consumer iterates."""
        self._watch()
        try:
            seen = self._number
            yield "jobs", {"jobs": self.listing()}
            while True:
                if self._number == seen:  # (else it came while the tab was written to)
                    await self._changed.wait()
                if not self._batches or self._batches[0][0] > seen + 1:
                    seen = self._number
                    yield "jobs", {"jobs": self.listing()}
                    continue
                for number, batch in list(self._batches):
                    if number > seen:
                        seen = number
                        for each in batch:
                            yield each
        finally:
            self._unwatch()

    def _watch(self) -> None:
        self._watchers += 1
        if self._task is None:
            self._look()  # what the first event shows is the baseline
            self._task = asyncio.get_running_loop().create_task(self._run(), name="web-job-feed")

    def _unwatch(self) -> None:
        self._watchers -= 1
        if self._watchers == 0 and self._task is not None:
            self._task.cancel()
            self._task = None
            self._seen.clear()
            self._batches.clear()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                batch = self._look()
            except Exception:  # a look that fails must not end every tab's list
                logger.exception("the web view's job list failed to look at the jobs")
                continue
            if batch:
                self._number += 1
                self._batches.append((self._number, batch))
                self._changed.notify()

    def _look(self) -> list[Event]:
        newest, _ = self._manager.newest(MAX_LISTED)
        batch: list[Event] = []
        now: dict[int, tuple[Any, ...]] = {}
        for job in newest:
            record = job.record
            look = (record.state, record.exit_code, job.subscribers, job.log_size, record.name)
            now[job.id] = look
            if self._seen.get(job.id) != look:
                batch.append(("job", {"job": job_json(job)}))
        batch += [("removed", {"id": str(job_id)}) for job_id in self._seen if job_id not in now]
        self._seen = now
        return batch


FEED = web.AppKey("tailhub_job_feed", JobFeed)


async def job_events(request: web.Request) -> web.StreamResponse:
    """`GET /api/events/jobs`: `jobs`, then `job` and `removed` events; heartbeats."""
    state = state_of(request)
    identity = identity_of(request)
    refusal = state.slots.refusal(identity.key)
    if refusal is not None:
        return json_error(429, refusal)
    with state.slots.held(identity.key):
        response = await open_stream(request)
        events = request.app[FEED].events()
        pending: asyncio.Future[Event] | None = None
        interval = state.settings.heartbeat_interval
        # The session is checked at least this often, busy or idle (a revoked token's tab
        # must not keep its feed for as long as jobs keep changing).
        checked_at = time.monotonic()
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(events.__anext__())
                done, _ = await asyncio.wait({pending}, timeout=interval)
                if not done or time.monotonic() - checked_at >= interval:
                    checked_at = time.monotonic()
                    if not still_valid(identity, state.tokens):
                        await response.write(event("error", {"message": "the session has ended"}))
                        break
                if not done:
                    await response.write(HEARTBEAT)
                    continue
                name, data = pending.result()
                pending = None
                await response.write(event(name, data))
        except ConnectionError:
            pass
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            await events.aclose()
        return response
