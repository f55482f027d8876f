"""One job's reconnect schedule: how long to wait after a failed connection, what to tell the
job's followers about it, and when to give up.

Only progress (bytes of the upstream's own output reaching the log) resets the schedule:
what a failing command prints on stderr (ssh's "Could not resolve hostname") is no sign
that the upstream works, and counting it as growth once made a dead host reconnect six
times a second forever. Between progress, the delay doubles with jitter up to a cap, and
the upstream is given up once it has failed for `give_up_after` seconds in a row.

Followers are told of a failure once per distinct kind of error (a command's exit code);
the same kind again is told only at the 2nd, 4th, 8th... time in a row, with the count and
the latest message, so that a host down for an hour costs a handful of events, not one per
attempt. (The kind, not the message: a message holding a time or a pid would differ each
time and defeat it.)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ReconnectPolicy:
    """The delays between connections, and how long a failing upstream is retried."""

    initial_delay: float = 0.2
    max_delay: float = 10.0
    # Seconds an upstream may fail without progress before its job fails; None: forever.
    give_up_after: float | None = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_delay <= self.max_delay:
            raise ValueError("reconnect delays: 0 < initial delay <= max delay")
        if self.give_up_after is not None and self.give_up_after <= 0:
            raise ValueError("give-up-after must be positive (None retries forever)")


@dataclass(frozen=True)
class Retry:
    """Connect again after `delay` seconds; `event`, if any, is for the job's followers."""

    delay: float
    event: str | None


@dataclass(frozen=True)
class GiveUp:
    """Stop reconnecting: the job fails with `reason`."""

    reason: str


class Reconnects:
    """The reconnect schedule of one fetch (see the module's docstring)."""

    def __init__(
        self,
        policy: ReconnectPolicy,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._jitter = jitter
        # Failures since the last progress: the delay's exponent.
        self._failures = 0
        # Failures towards giving up (healthy ends do not count), and when the first was.
        self._in_row = 0
        self._failing_since: float | None = None
        # The kind of error last told to followers, and how many times in a row it happened.
        self._told: object = None
        self._repeats = 0

    def progressed(self) -> None:
        """The upstream delivered output: the next failure starts the schedule afresh."""
        self._failures = self._in_row = 0
        self._failing_since = None
        self._told = None
        self._repeats = 0

    def failed(self, error: str, kind: object, *, healthy: bool = False) -> Retry | GiveUp:
        """A connection ended with `error`, of `kind`. `healthy`: the upstream asked to be
        followed again (not a failure towards giving up, but the delay still grows)."""
        now = self._clock()
        self._failures += 1
        if healthy:
            self._in_row = 0
            self._failing_since = None
        else:
            self._in_row += 1
            if self._failing_since is None:
                self._failing_since = now
        give_up = self._policy.give_up_after
        failing_for = 0.0 if self._failing_since is None else now - self._failing_since
        if give_up is not None and self._failing_since is not None and failing_for >= give_up:
            return GiveUp(
                f"upstream failed {self._in_row} times in a row over {_duration(failing_for)}"
                f" (tailhubd --give-up-after {_duration(give_up)}); last: {error}"
            )
        # Jitter: jobs that lost one host together should not return together.
        delay = (0.5 + 0.5 * self._jitter()) * min(
            self._policy.initial_delay * 2 ** min(self._failures - 1, 32), self._policy.max_delay
        )
        if give_up is not None and self._failing_since is not None:
            # The last try comes at the deadline, not a whole delay past it.
            delay = min(delay, self._failing_since + give_up - now)
        return Retry(delay, self._event(error, kind, delay))

    def _event(self, error: str, kind: object, delay: float) -> str | None:
        if self._told is None or kind != self._told:
            self._told, self._repeats = kind, 1
            return f"upstream connection lost ({error}); reconnecting in {delay:.1f}s"
        self._repeats += 1
        if self._repeats & (self._repeats - 1):  # not a power of two: not told
            return None
        return (
            f"upstream connection lost ({error}) {self._repeats} times in a row; "
            f"reconnecting in {delay:.1f}s"
        )


def _duration(seconds: float) -> str:
    """`seconds` as people read it: 45s, 2m30s, 1h5m."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
