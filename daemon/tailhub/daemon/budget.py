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

Clients that stop reading altogether keep what they hold, and enough of them could hold the
whole budget and stop everyone else. So when most of the budget is held by grants older than
`patience` seconds while subscribers wait, it is *frozen*: until that is no longer so
(checked every `patience` seconds), each subscriber that finds no budget free gets a small
`floor` of bytes beyond it instead of waiting, and so keeps moving, slowly. Slow readers
that still read give their grants back within the patience, and never freeze it. Memory then
stays within the budget plus one floor per such stream, of the order of what gRPC itself
keeps per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BudgetFigures:
    """What the budget did so far: for the daemon's log and the benchmark."""

    limit: int
    in_flight: int
    peak_in_flight: int  # overdrafts included
    grants: int
    shrunk: int  # grants smaller than asked for
    waits: int  # grants that had to wait for budget
    wait_seconds: float  # summed over those waits
    overdrafts: int  # floor grants beyond the budget while it was frozen


@dataclass(eq=False)
class Grant:
    """Bytes a subscriber holds; `size` may be cut down before they are given back."""

    size: int
    overdraft: bool = False


@dataclass
class _Waiter:
    want: int
    future: asyncio.Future[Grant] = field(repr=False)


class SendBudget:
    """A byte semaphore for one event loop: `acquire` bytes, `release` them once sent."""

    def __init__(
        self, limit: int, min_grant: int, *, floor: int = 2048, patience: float = 5.0
    ) -> None:
        if limit < min_grant or min_grant < floor or floor < 1:
            raise ValueError("the budget must hold at least one minimum grant")
        self.limit = limit
        self.min_grant = min_grant
        self._floor = floor
        self._patience = patience
        self._in_flight = 0  # budget and overdrafts
        self._overdrawn = 0
        self._peak = 0
        self._grants = 0
        self._shrunk = 0
        self._waits = 0
        self._wait_seconds = 0.0
        self._overdrafts = 0
        self._waiters: deque[_Waiter] = deque()
        # Grants of the budget not given back yet, oldest first, with the time they were made.
        self._held: dict[Grant, float] = {}
        self._frozen = False
        self._watch: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def figures(self) -> BudgetFigures:
        return BudgetFigures(
            limit=self.limit,
            in_flight=self._in_flight,
            peak_in_flight=self._peak,
            grants=self._grants,
            shrunk=self._shrunk,
            waits=self._waits,
            wait_seconds=self._wait_seconds,
            overdrafts=self._overdrafts,
        )

    async def acquire(self, want: int) -> Grant:
        """Between min(want, min_grant) and `want` bytes (what is free); waits for the least."""
        if want <= 0:
            raise ValueError("a grant is for at least one byte")
        if not self._waiters and self._fits(want):
            return self._grant(want)
        if self._frozen:
            return self._overdraft(want)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(want, loop.create_future())
        self._waiters.append(waiter)
        self._watch_soon()
        started = time.monotonic()
        try:
            grant = await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted just as the waiter was cancelled: the bytes go back.
                self.release(waiter.future.result())
            else:
                # Already popped when a release woke the queue between the cancel and here.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                # Leaving the head of the queue may let the next ones through.
                self._wake()
            raise
        self._waits += 1
        self._wait_seconds += time.monotonic() - started
        return grant

    def shrink(self, grant: Grant, size: int) -> None:
        """Gives back the part of `grant` beyond `size` bytes (what the chunk did not need)."""
        if size < grant.size:
            self._give_back(grant, grant.size - size)
            grant.size = size

    def release(self, grant: Grant) -> None:
        """Gives back all of `grant` once gRPC has taken its bytes (or the stream ended)."""
        self._give_back(grant, grant.size)
        grant.size = 0

    def _give_back(self, grant: Grant, size: int) -> None:
        if size <= 0:
            return
        self._in_flight -= size
        if grant.overdraft:
            self._overdrawn -= size
            return
        if size == grant.size:
            self._held.pop(grant, None)
        self._wake()

    def _fits(self, want: int) -> bool:
        return self.limit - self._in_flight + self._overdrawn >= min(want, self.min_grant)

    def _grant(self, want: int) -> Grant:
        granted = min(want, self.limit - self._in_flight + self._overdrawn)
        self._count(granted)
        if granted < want:
            self._shrunk += 1
        grant = Grant(granted)
        self._held[grant] = time.monotonic()
        return grant

    def _overdraft(self, want: int) -> Grant:
        granted = min(want, self._floor)
        self._count(granted)
        self._overdrawn += granted
        self._overdrafts += 1
        return Grant(granted, overdraft=True)

    def _count(self, granted: int) -> None:
        self._in_flight += granted
        self._peak = max(self._peak, self._in_flight)
        self._grants += 1

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0].want):
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(self._grant(waiter.want))

    def _watch_soon(self) -> None:
        if self._watch is None:
            loop = asyncio.get_running_loop()
            self._watch = loop.call_later(self._patience, self._check_frozen)

    def _check_frozen(self) -> None:
        """Every `patience` s while some wait or it is frozen: do old grants hold most of it?"""
        self._watch = None
        old = time.monotonic() - self._patience
        stuck = 0
        for grant, since in self._held.items():
            if since > old:
                break  # the rest are younger
            stuck += grant.size
        if stuck < self.limit * 3 // 4:
            self._frozen = False
            self._wake()
        elif self._waiters or self._frozen:
            # The holders have (nearly) stopped reading. Everyone waiting gets a floor beyond
            # the budget, and so does everyone who finds none free until it moves again.
            self._frozen = True
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.future.done():
                    waiter.future.set_result(self._overdraft(waiter.want))
        if self._waiters or self._frozen:
            self._watch_soon()
