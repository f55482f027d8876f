"""The essential tasks: the daemon-wide loops it cannot serve correctly without.

Heartbeats, retention, the health reports, the listeners' certificate check and, in cluster
mode, lease keep-alive, take-over, record sync and the mirror (their names: faults.py).
Each runs as long as the daemon. If one ends while the daemon serves, by raising or by
returning, nothing stands in for it (leases would stop renewing while health said SERVING):
as in a trio or anyio task group, one child's death takes the whole down. The supervisor
logs the reason at ERROR, with the task's name and the exception, and tells its owner once
(the daemon turns health NOT_SERVING, stops as on SIGTERM, and exits with the reason
(errors.EssentialTaskDied), for its service manager to restart it).

Per-job tasks are not here: a fault in one job fails that job only (tasks.TaskSet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, NoReturn

from tailhub.daemon.errors import EssentialTaskDied, InjectedFault
from tailhub.daemon.faults import ESSENTIAL_TASKS, FAIL_LOOP_ENV

logger = logging.getLogger(__name__)

FailureHandler = Callable[[EssentialTaskDied], None]


class Supervisor:
    """Runs the essential tasks; the first one to end unasked is the daemon's end.

    Owners spawn their loops here and cancel them on close (`cancel`); a task cancelled, or
    ending once `stop()` was called (the daemon stops anyway), is no failure. `failing` is
    TAILHUB_FAIL_LOOP's: each named task raises once `serving()` was called, or that many
    seconds later, in place of running.
    """

    def __init__(self, failing: Mapping[str, float] | None = None) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        # Tasks whose end their owner asked for.
        self._ending: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._failing = dict(failing or {})
        self._serving = asyncio.Event()
        self._on_failure: FailureHandler | None = None
        # The first essential task's death, if any.
        self.failure: EssentialTaskDied | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    def on_failure(self, handler: FailureHandler) -> None:
        """Calls `handler` at the first death (at once if one died already)."""
        self._on_failure = handler
        if self.failure is not None:
            handler(self.failure)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        if name not in ESSENTIAL_TASKS:
            coro.close()
            raise ValueError(f"{name!r} is not an essential task (faults.ESSENTIAL_TASKS)")
        if name in self._failing:
            coro.close()
            coro = self._fail_on_purpose(name, self._failing[name])
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def serving(self) -> None:
        """The daemon serves: from here on, a task TAILHUB_FAIL_LOOP names raises."""
        self._serving.set()

    def stop(self) -> None:
        """The daemon stops: a task that ends from here on is expected to."""
        self._stopping = True

    async def cancel(self, tasks: Iterable[asyncio.Task[Any]]) -> None:
        """Cancels these tasks (their owner closes) and waits for them."""
        ending = [task for task in tasks if not task.done()]
        self._ending.update(ending)
        for task in ending:
            task.cancel()
        results = await asyncio.gather(*ending, return_exceptions=True)
        for task, result in zip(ending, results, strict=True):
            self._ending.discard(task)
            if isinstance(result, Exception):
                logger.error("essential task %s failed while closing: %r", task.get_name(), result)

    async def aclose(self) -> None:
        """Stops, then cancels every task still running and waits for them."""
        self.stop()
        await self.cancel(list(self._tasks))

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # read here, so it is never "never retrieved"
        if self._stopping or task in self._ending:
            if error is not None:
                logger.error("essential task %s failed while closing: %r", task.get_name(), error)
            return
        failure = EssentialTaskDied(task.get_name(), error)
        logger.error("%s", failure, exc_info=error)
        if self.failure is not None:
            return
        self.failure = failure
        if self._on_failure is None:
            return
        try:
            self._on_failure(failure)
        except Exception:
            logger.exception("handling the death of essential task %s failed", task.get_name())

    async def _fail_on_purpose(self, name: str, delay: float) -> NoReturn:
        await self._serving.wait()
        if delay:
            await asyncio.sleep(delay)
        raise InjectedFault(f"{FAIL_LOOP_ENV}={name} made it fail")
