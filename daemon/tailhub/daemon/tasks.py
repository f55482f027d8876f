"""Per-job background tasks (fetches, kill timers, submissions): none can fail unseen, a fault
fails its job only, and every one is cancelled on close. The daemon-wide loops, whose death
stops the daemon, are supervisor.py's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)

CrashHandler = Callable[[BaseException], None]


class TaskSet:
    """Owns background tasks: keeps strong references, reports crashes, cancels on close.

    A task that raises is logged and its `on_crash` is called with the error (the job
    manager fails the job, wakes its followers and seals it), so "Task exception was never
    retrieved" cannot happen and no error is lost. `on_crash` itself is guarded: a failure in
    it (a database write on a full disk) is logged, never raised into the event loop.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str,
        on_crash: CrashHandler | None = None,
    ) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(done, on_crash))
        return task

    def _done(self, task: asyncio.Task[Any], on_crash: CrashHandler | None) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # read here, so it is never "never retrieved"
        if error is None:
            return
        logger.error("task %s crashed: %r", task.get_name(), error, exc_info=error)
        if on_crash is None or self._closing:
            return
        try:
            on_crash(error)
        except Exception:
            logger.exception("handling the crash of task %s failed too", task.get_name())

    async def aclose(self) -> None:
        """Cancels every task and waits for all of them; logs any that ended in an error."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, Exception):
                logger.error("task %s failed while closing: %r", task.get_name(), result)
