"""The daemon-wide budget of bytes in flight to subscribers, shared fairly among clients.

A chunk is *in flight* from the moment a subscriber takes it (read from the log, encoded)
until gRPC has taken the whole message for sending: grpc copies every message it is handed,
and a stream whose client reads slowly holds its copy until flow control lets it out. Without
a budget that is up to one full-size chunk per stream, so memory grows with the number of
followers that fall behind; with it, the total is bounded whatever they do.

A subscriber asks for what it is owed (up to a chunk) and gets all of it, or waits until all
of it is free: under pressure the daemon sends fewer, larger messages, never more, smaller ones
(grants shrunk to what was free made 64 KB messages out of 256 KB ones, and a saturated daemon
fell further behind for it). While it waits it only falls behind: what it has not sent stays
in the log, and it takes it, coalesced, when its turn comes.

Each grant belongs to a client's *share* (a token's name, the Unix socket's owner). Waiters
are served in turns across shares, and within a share those near the live edge before deep
catch-ups (which still get every fourth turn). A share may always use what is free of the
budget; beyond it, a share holding less than its fair part (the budget over the shares
holding or waiting) still gets its grant, up to twice the budget in all. So a client whose
streams stopped reading holds at most what it took, and another client's follower never waits
behind it: bytes granted but unsent count against their own client's share, not everyone's.

Clients that stop reading altogether keep what they hold, and enough streams of one share
could hold all of it. So when most of a share (or of the whole budget) is held by grants older
than `patience` seconds while some wait, it is *frozen*: until that is no longer so (checked
every `patience` seconds), each of its subscribers that finds nothing it may take gets a small
`floor` of bytes beyond it instead of waiting, and so keeps moving, slowly. Slow readers that
still read give their grants back within the patience, and never freeze it. Memory stays
within twice the budget plus one floor per such stream, of the order of what gRPC itself
keeps per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

# Within a share, a deep catch-up's waiter gets a turn after this many live ones in a row.
LIVE_TURNS = 3


@dataclass(frozen=True)
class BudgetFigures:
    """What the budget did so far: for the daemon's log and the benchmark."""

    limit: int
    in_flight: int
    peak_in_flight: int  # overdrafts included
    grants: int
    shrunk: int  # grants smaller than asked for (a budget smaller than the ask)
    waits: int  # grants that had to wait for budget
    wait_seconds: float  # summed over those waits
    overdrafts: int  # floor grants beyond the budget while it was frozen


@dataclass(eq=False)
class Grant:
    """Bytes a subscriber holds; `size` may be cut down before they are given back."""

    size: int
    overdraft: bool = False
    share: _Share | None = field(default=None, repr=False)


@dataclass(eq=False)
class _Waiter:
    want: int
    live: bool
    future: asyncio.Future[Grant] = field(repr=False)
    owed: Callable[[], int] | None = field(default=None, repr=False)

    def asks(self) -> int:
        """What it is owed by now: it fell further behind while it waited."""
        return self.want if self.owed is None else max(self.want, self.owed())


class _Share:
    """One client's part: the grants it holds (oldest first, with their time) and its
    waiters, those near the live edge apart from deep catch-ups."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.held = 0
        self.grants: dict[Grant, float] = {}
        self.live: deque[_Waiter] = deque()
        self.behind: deque[_Waiter] = deque()
        self.live_in_a_row = 0
        self.frozen = False

    @property
    def waiting(self) -> bool:
        return bool(self.live or self.behind)

    @property
    def idle(self) -> bool:
        return not self.held and not self.waiting and not self.frozen

    def head(self) -> _Waiter | None:
        """The next to serve: live ones first, a deep catch-up every LIVE_TURNS + 1."""
        if self.behind and (not self.live or self.live_in_a_row >= LIVE_TURNS):
            return self.behind[0]
        return self.live[0] if self.live else None

    def pop(self, waiter: _Waiter) -> None:
        if self.live and self.live[0] is waiter:
            self.live.popleft()
            self.live_in_a_row += 1
        else:
            self.behind.popleft()
            self.live_in_a_row = 0

    def remove(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            (self.live if waiter.live else self.behind).remove(waiter)

    def stuck(self, old: float) -> int:
        """Bytes held by grants made at or before `old`."""
        stuck = 0
        for grant, since in self.grants.items():
            if since > old:
                break  # the rest are younger
            stuck += grant.size
        return stuck


class SendBudget:
    """A byte semaphore for one event loop: `acquire` bytes, `release` them once sent."""

    def __init__(
        self, limit: int, min_grant: int, *, floor: int = 2048, patience: float = 5.0
    ) -> None:
        if limit < min_grant or min_grant < floor or floor < 1:
            raise ValueError("the budget must hold at least one minimum grant")
        self.limit = limit
        # The grid on which chunks cut short by a grant end (fanout._chunk_end).
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
        # The shares holding, waiting or frozen, in the order their turns come.
        self._shares: dict[Hashable, _Share] = {}
        self._frozen = False  # most of the whole budget held by old grants
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

    async def acquire(
        self,
        want: int,
        share: Hashable = None,
        *,
        live: bool = False,
        owed: Callable[[], int] | None = None,
    ) -> Grant:
        """`want` bytes (the whole budget at most) for the client `share`, waiting until they
        may be taken; `live`: near the live edge, served before deep catch-ups. A waiter is
        granted what `owed()` says when its turn comes, if that is more (coalesced)."""
        if want <= 0:
            raise ValueError("a grant is for at least one byte")
        owner = self._shares.get(share)
        if owner is None:
            owner = self._shares[share] = _Share(share)
        if not owner.waiting and self._may(owner, want):
            return self._grant(owner, want)
        if owner.frozen or self._frozen:
            return self._overdraft(owner, want)
        waiter = _Waiter(want, live, asyncio.get_running_loop().create_future(), owed)
        (owner.live if live else owner.behind).append(waiter)
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
                owner.remove(waiter)
                self._forget_if_idle(owner)
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

    @property
    def _used(self) -> int:
        return self._in_flight - self._overdrawn

    def _fair(self) -> int:
        """A share's fair part: the budget over the shares holding or waiting."""
        return self.limit // max(1, len(self._shares))

    def _may(self, owner: _Share, want: int) -> bool:
        need = min(want, self.limit)
        if self._used + need <= self.limit:
            return True
        # Beyond the budget, a share still within its fair part: what other shares hold
        # (streams that stopped reading, say) is theirs to wait on, not this one's.
        return owner.held + need <= self._fair() and self._used + need <= 2 * self.limit

    def _give_back(self, grant: Grant, size: int) -> None:
        if size <= 0:
            return
        self._in_flight -= size
        owner = grant.share
        if grant.overdraft:
            self._overdrawn -= size
            return
        if owner is None:
            return
        owner.held -= size
        if size == grant.size:
            owner.grants.pop(grant, None)
            self._forget_if_idle(owner)
        self._wake()

    def _forget_if_idle(self, owner: _Share) -> None:
        if owner.idle and self._shares.get(owner.key) is owner:
            del self._shares[owner.key]

    def _grant(self, owner: _Share, want: int) -> Grant:
        granted = min(want, self.limit)
        self._count(granted)
        if granted < want:
            self._shrunk += 1
        grant = Grant(granted, share=owner)
        owner.held += granted
        owner.grants[grant] = time.monotonic()
        return grant

    def _overdraft(self, owner: _Share, want: int) -> Grant:
        granted = min(want, self._floor)
        self._count(granted)
        self._overdrawn += granted
        self._overdrafts += 1
        self._forget_if_idle(owner)
        return Grant(granted, overdraft=True)

    def _count(self, granted: int) -> None:
        self._in_flight += granted
        self._peak = max(self._peak, self._in_flight)
        self._grants += 1

    def _wake(self) -> None:
        """Serves waiters in turns across shares, one grant per share a round, while any may
        be granted."""
        granted = True
        while granted:
            granted = False
            for owner in [share for share in self._shares.values() if share.waiting]:
                waiter = owner.head()
                if waiter is None:
                    continue
                if waiter.future.done():  # (cancelled: gone)
                    owner.pop(waiter)
                    granted = True
                    continue
                want = waiter.asks()
                if not self._may(owner, want):
                    continue
                owner.pop(waiter)
                waiter.future.set_result(self._grant(owner, want))
                granted = True
                # The share's next turn comes after the others'.
                self._shares[owner.key] = self._shares.pop(owner.key)

    def _watch_soon(self) -> None:
        if self._watch is None:
            loop = asyncio.get_running_loop()
            self._watch = loop.call_later(self._patience, self._check_frozen)

    def _check_frozen(self) -> None:
        """Every `patience` s while some wait or some share is frozen: do old grants hold most
        of a share's fair part, or of the whole budget?"""
        self._watch = None
        old = time.monotonic() - self._patience
        fair = self._fair()
        stuck = 0
        for owner in list(self._shares.values()):
            own = owner.stuck(old)
            stuck += own
            owner.frozen = (owner.waiting or owner.frozen) and own >= fair * 3 // 4
        self._frozen = stuck >= self.limit * 3 // 4 and (
            self._frozen or any(owner.waiting or owner.frozen for owner in self._shares.values())
        )
        self._wake()
        for owner in list(self._shares.values()):
            if owner.frozen or self._frozen:
                # The holders have (nearly) stopped reading. Everyone of theirs waiting gets a
                # floor beyond the budget, and so does everyone who finds none free until it
                # moves again.
                self._overdraw_waiters(owner)
            self._forget_if_idle(owner)
        if self._frozen or any(s.waiting or s.frozen for s in self._shares.values()):
            self._watch_soon()

    def _overdraw_waiters(self, owner: _Share) -> None:
        for queue in (owner.live, owner.behind):
            while queue:
                waiter = queue.popleft()
                if not waiter.future.done():
                    waiter.future.set_result(self._overdraft(owner, waiter.want))
