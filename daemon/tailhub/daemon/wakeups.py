"""Wake-ups for many waiters: a resetting broadcast (ChangeSignal) and a one-shot StopFlag."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ChangeSignal:
    """Like asyncio.Event that resets itself: waiters see the next change, not an old one.

    Each waiter has its own future, so cancelling one waiter (a client that disconnects)
    never disturbs the others, and a signal nobody waits on costs nothing.
    """

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[bool]] = set()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def wait(self) -> None:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        try:
            await future
        finally:
            self._waiters.discard(future)

    async def wait_for(self, timeout: float) -> bool:
        """Waits at most `timeout` seconds; True if the signal fired."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        handle = asyncio.get_running_loop().call_later(timeout, _expire, future)
        try:
            return await future
        finally:
            handle.cancel()
            self._waiters.discard(future)

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for future in waiters:
            if not future.done():
                future.set_result(True)


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class StopFlag:
    """Set once, when the tailer should drain the file and return; wakes whoever registered."""

    def __init__(self) -> None:
        self._set = False
        self._callbacks: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            for callback in tuple(self._callbacks):
                callback()

    def on_set(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._callbacks.append(callback)
        if self._set:
            callback()
        return lambda: self._callbacks.remove(callback)
