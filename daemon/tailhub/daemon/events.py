"""Limits on a job's source events: how many are kept, how fast they come, how long each is.

A source can report events far faster than anyone reads them (a command's stderr in events
mode prints a line per event): every event kept costs memory, a database row and room in
GetJob's response. So each job keeps at most `max_events`, at most `rate` per second
sustained (a token bucket holding `burst`), each message cut to `max_message_bytes`. What
goes over is dropped and counted, and a single event later says how many.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_EVENTS = 1000
RATE_PER_SECOND = 20.0
BURST = 100
MAX_MESSAGE_BYTES = 1024
_ELLIPSIS = "…"
# Protobuf framing of one event (offset, time, message length), rounded up.
_EVENT_OVERHEAD = 32
# Half of gRPC's default 4 MiB message limit: room for the job itself, and to spare.
_GET_JOB_BUDGET = 2 * 1024 * 1024


@dataclass(frozen=True)
class EventLimits:
    """How many events a job keeps, and how fast; validated on construction."""

    max_events: int = MAX_EVENTS
    rate: float = RATE_PER_SECOND
    burst: int = BURST
    max_message_bytes: int = MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        # Two: one slot is kept back for the last "dropped" count.
        if self.max_events < 2 or self.rate <= 0 or self.burst < 1:
            raise ValueError("event limits: max_events >= 2, rate > 0 and burst >= 1")
        if self.max_message_bytes < 16:
            raise ValueError("event limits: messages must be allowed 16 bytes at least")
        # GetJob returns every event a job kept: all of them must fit in one response.
        if self.max_events * (self.max_message_bytes + _EVENT_OVERHEAD) > _GET_JOB_BUDGET:
            raise ValueError("event limits: a job's events would not fit in GetJob's response")


def dropped_message(count: int) -> str:
    """The event that reports dropped events."""
    return f"{count} event{'' if count == 1 else 's'} dropped (rate or count limit)"


def clip(message: str, max_bytes: int) -> str:
    """`message` cut to at most `max_bytes` of UTF-8, marked with an ellipsis when cut."""
    encoded = message.encode(errors="replace")
    if len(encoded) <= max_bytes:
        return message
    room = max_bytes - len(_ELLIPSIS.encode())
    return encoded[:room].decode(errors="ignore") + _ELLIPSIS


class EventLimiter:
    """Decides which of one job's events are kept; counts the others until it can say so.

    One slot of `max_events` is held back so that the count of events dropped for good (the
    job reached its limit) can always be reported, when the job ends.
    """

    def __init__(
        self,
        limits: EventLimits,
        kept: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self.kept = kept
        self.dropped = 0
        self._tokens = float(limits.burst)
        self._refilled_at = clock()

    def offer(self, message: str) -> list[str]:
        """The messages to keep now for `message`: none, or it (after a dropped count)."""
        self._refill()
        wanted = 2 if self.dropped else 1
        if self._tokens < 1 or self.kept + wanted > self._limits.max_events - 1:
            self.dropped += 1
            return []
        self._tokens -= 1
        kept = [dropped_message(self.dropped)] if self.dropped else []
        kept.append(clip(message, self._limits.max_message_bytes))
        self.kept += len(kept)
        self.dropped = 0
        return kept

    def flush(self, *, final: bool) -> str | None:
        """The dropped count to report now, if any: while the rate allows, or at the end."""
        self._refill()
        if not self.dropped:
            return None
        room = self._limits.max_events if final else self._limits.max_events - 1
        if self.kept >= room or (not final and self._tokens < 1):
            return None
        if not final:
            self._tokens -= 1
        message = dropped_message(self.dropped)
        self.kept += 1
        self.dropped = 0
        return message

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._refilled_at)
        self._refilled_at = now
        self._tokens = min(float(self._limits.burst), self._tokens + elapsed * self._limits.rate)
