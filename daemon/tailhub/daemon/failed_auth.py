"""Failed authentications over the network, limited and told per peer address.

Anyone who reaches a --listen port may guess tokens; unchecked, one client made ~3,800
guesses a second, slowed every token holder's calls, and left no trace. Each peer address
gets a token bucket of failures: past it, its calls are refused with RESOURCE_EXHAUSTED
before any token is looked at, until the bucket refills. Failures are logged at WARNING,
aggregated: the first one from a peer at once, then one line a minute with the count while
they go on. Lines that name an address are also bounded daemon-wide: a local client can
fail from every address of 127.0.0.0/8 (45,000 of them wrote 11 MB of log in 130 s and pushed
its 40 MiB history out in ~8 min), so past LINES_PER_MINUTE in a minute the rest of that
minute is told in one line of counts ("M more failed authentications from K addresses").

A peer is an IP address; an IPv6 one counts by its /64 (peer_groups.py). At most MAX_PEERS
are remembered; the least recently seen go first.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# A client with a wrong token file fails a few times and stops; a guesser does not.
BURST = 20
REFILL_PER_S = 1.0
REPORT_EVERY_S = 60.0
MAX_PEERS = 4096
# Lines naming an address, in all, per REPORT_EVERY_S; the rest go into one line of counts.
LINES_PER_MINUTE = 20


@dataclass
class _Peer:
    tokens: float
    stamp: float
    # Since the last line about this peer: failures, and calls refused over the limit.
    failed: int = 0
    refused: int = 0
    report: asyncio.TimerHandle | None = None


class FailedAuthLimit:
    """Token buckets of failed authentications, one per peer address, and their log lines."""

    def __init__(
        self,
        burst: int = BURST,
        refill_per_s: float = REFILL_PER_S,
        report_every_s: float = REPORT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        lines_per_minute: int = LINES_PER_MINUTE,
    ) -> None:
        self._burst = burst
        self._refill = refill_per_s
        self._report_every = report_every_s
        self._clock = clock
        self._peers: collections.OrderedDict[str, _Peer] = collections.OrderedDict()
        self._lines = _LineBudget(lines_per_minute, report_every_s, clock)

    def wait_before(self, address: str) -> float | None:
        """Seconds until `address` may try again when it is over the limit (the call is then
        counted as refused); None when it may try now."""
        peer = self._peers.get(address)
        if peer is None:
            return None
        self._refill_bucket(peer)
        if peer.tokens >= 1:
            return None
        peer.refused += 1
        return (1 - peer.tokens) / self._refill

    def failed(self, address: str, why: str) -> None:
        """Takes one failure from `address`'s bucket; logs it, aggregated."""
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = _Peer(float(self._burst), self._clock())
            while len(self._peers) > MAX_PEERS:
                evicted, oldest = self._peers.popitem(last=False)
                self._report(evicted, oldest)
        else:
            self._peers.move_to_end(address)
            self._refill_bucket(peer)
        peer.tokens = max(0.0, peer.tokens - 1)
        if peer.report is None:
            self._lines.say(
                1,
                0,
                "failed authentication from %s: %s (more from it are counted, and logged at "
                "most once a minute; past %d it is refused for a while)",
                address,
                why,
                self._burst,
            )
            peer.report = asyncio.get_running_loop().call_later(
                self._report_every, self._report, address, peer
            )
        else:
            peer.failed += 1

    def close(self) -> None:
        """Logs what was counted and not yet told (the daemon stops)."""
        peers, self._peers = self._peers, collections.OrderedDict()
        for address, peer in peers.items():
            self._report(address, peer)
        self._lines.close()

    def _refill_bucket(self, peer: _Peer) -> None:
        now = self._clock()
        peer.tokens = min(float(self._burst), peer.tokens + (now - peer.stamp) * self._refill)
        peer.stamp = now

    def _report(self, address: str, peer: _Peer) -> None:
        """The line for what `peer` did since the last one; again in a minute while it is
        still remembered and still failing."""
        if peer.report is not None:
            peer.report.cancel()
            peer.report = None
        remembered = self._peers.get(address) is peer
        if not peer.failed and not peer.refused:
            # A quiet minute: forgotten once its bucket is full, and told at once next time.
            self._refill_bucket(peer)
            if remembered and peer.tokens >= self._burst:
                del self._peers[address]
            return
        self._lines.say(
            peer.failed,
            peer.refused,
            "failed authentication from %s: %d more, and %d calls refused over the limit, "
            "since the last line about it",
            address,
            peer.failed,
            peer.refused,
        )
        peer.failed = peer.refused = 0
        if remembered:
            peer.report = asyncio.get_running_loop().call_later(
                self._report_every, self._report, address, peer
            )


class _LineBudget:
    """At most `per_window` lines naming an address per `window` seconds, daemon-wide; what
    the others would have said is counted and told in one line when the window ends."""

    def __init__(self, per_window: int, window: float, clock: Callable[[], float]) -> None:
        self._per_window = per_window
        self._window = window
        self._clock = clock
        self._started = clock()
        self._said = 0
        # Held back in this window: lines (one per address and window at most, so the
        # count of addresses), failures in them, calls refused in them.
        self._held_lines = 0
        self._held_failed = 0
        self._held_refused = 0
        self._summary: asyncio.TimerHandle | None = None

    def say(self, failed: int, refused: int, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._started >= self._window:
            self._started, self._said = now, 0
        if self._said < self._per_window:
            self._said += 1
            logger.warning(message, *args)
            return
        self._held_lines += 1
        self._held_failed += failed
        self._held_refused += refused
        if self._summary is None:
            delay = max(self._started + self._window - now, 0.0)
            self._summary = asyncio.get_running_loop().call_later(delay, self._summarize)

    def close(self) -> None:
        self._summarize()

    def _summarize(self) -> None:
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        if not self._held_lines:
            return
        logger.warning(
            "failed authentication: %d more failed authentications from %d addresses, and %d "
            "calls refused over the limit, not told one by one (at most %d lines a minute "
            "name an address)",
            self._held_failed,
            self._held_lines,
            self._held_refused,
            self._per_window,
        )
        self._held_lines = self._held_failed = self._held_refused = 0
