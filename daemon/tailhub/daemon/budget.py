"""The daemon-wide budget of bytes in flight to subscribers.

A chunk is *in flight* from the moment a subscriber takes it (read from the log, encoded)
until gRPC has taken the whole message for sending: grpc copies every message it is handed,
and a stream whose client reads slowly holds its copy until flow control lets it out. Without
a budget that is up to one full-size chunk per stream, so memory grows with the number of
followers that fall behind; with it, the total is bounded whatever they do.

A subscriber asks for what it would like to send and gets what is free up to that (at least
a minimum, so that a crowd still moves in chunks worth a message); when not even the minimum
is free it waits its turn (first come, first served) and meanwhile only falls behind: what it
has not sent stays in the log, and it reads it from there later.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetFigures:
    """What the budget did so far: for the daemon's log and the benchmark."""

    limit: int
    in_flight: int
    peak_in_flight: int
    grants: int
    waits: int  # grants that had to wait for budget
    wait_seconds: float  # summed over those waits
    shrunk: int  # grants smaller than asked for


class SendBudget:
    """A byte semaphore for one event loop: `acquire` some bytes, `release` them once sent."""

    def __init__(self, limit: int, min_grant: int) -> None:
        if limit < min_grant or min_grant < 1:
            raise ValueError("the budget must hold at least one minimum grant")
        self.limit = limit
        self.min_grant = min_grant
        self._in_flight = 0
        self._peak = 0
        self._grants = 0
        self._waits = 0
        self._wait_seconds = 0.0
        self._shrunk = 0
        # Waiting subscribers in arrival order: (bytes wanted, future of the bytes granted).
        self._waiters: deque[tuple[int, asyncio.Future[int]]] = deque()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def figures(self) -> BudgetFigures:
        return BudgetFigures(
            limit=self.limit,
            in_flight=self._in_flight,
            peak_in_flight=self._peak,
            grants=self._grants,
            waits=self._waits,
            wait_seconds=self._wait_seconds,
            shrunk=self._shrunk,
        )

    async def acquire(self, want: int) -> int:
        """Between min(want, min_grant) and `want` bytes (what is free); waits for the least."""
        if want <= 0:
            raise ValueError("a grant is for at least one byte")
        if not self._waiters and self._fits(want):
            return self._grant(want)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        entry = (want, future)
        self._waiters.append(entry)
        started = time.monotonic()
        try:
            granted = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted just as the waiter was cancelled: the bytes go back.
                self.release(future.result())
            else:
                self._waiters.remove(entry)
                # Leaving the head of the queue may let the next ones through.
                self._wake()
            raise
        self._waits += 1
        self._wait_seconds += time.monotonic() - started
        return granted

    def release(self, granted: int) -> None:
        """Gives back bytes of a grant (all or part of it) once gRPC has taken them."""
        if granted <= 0:
            return
        self._in_flight -= granted
        self._wake()

    def _fits(self, want: int) -> bool:
        return self.limit - self._in_flight >= min(want, self.min_grant)

    def _grant(self, want: int) -> int:
        granted = min(want, self.limit - self._in_flight)
        self._in_flight += granted
        self._peak = max(self._peak, self._in_flight)
        self._grants += 1
        if granted < want:
            self._shrunk += 1
        return granted

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            want, future = self._waiters.popleft()
            if not future.done():
                future.set_result(self._grant(want))
