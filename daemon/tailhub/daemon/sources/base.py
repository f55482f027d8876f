"""What every log source implements, and what the fetcher offers it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from tailhub.daemon.domain import JobState
from tailhub.daemon.wakeups import StopFlag


@dataclass(frozen=True)
class Outcome:
    """How an upstream ended on its own: the job's exit code and, if useful, why."""

    exit_code: int
    reason: str = ""
    # The state the upstream reported (SkyPilot's "cancelled"); None: from the exit code.
    state: JobState | None = None


class Upstream(Protocol):
    """The fetcher's side of one fetch: where bytes go and what the source may remember."""

    @property
    def stored(self) -> int:
        """Bytes already in the job's log: a replaying source skips this many."""

    @property
    def state(self) -> dict[str, Any]:
        """Resume state that survives a daemon restart (after `save_state`)."""

    def append(self, data: bytes, *, progress: bool = True) -> None:
        """Adds `data` to the log. `progress=False`: bytes that are not the upstream's output
        (a command's own stderr merged into the log), stored alike but no sign that the
        upstream works: they do not reset the reconnect schedule."""

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the stored log, to compare a replay with."""

    def save_state(self) -> None: ...

    def discard_after(self, offset: int) -> None:
        """Cuts the log back to `offset` before anything is served past it (recovery only)."""

    def event(self, message: str) -> None:
        """Reports something that happened upstream to the job's followers."""

    @property
    def finished(self) -> StopFlag:
        """Set when the job's final state is set: drain what is there and return."""


class Source(Protocol):
    """One kind of upstream. `fetch` is one connection: it returns when the upstream ended on
    its own (an Outcome) or when asked to finish (None), and raises UpstreamFailed when the
    connection broke."""

    counts_connections: ClassVar[bool]

    async def fetch(self, upstream: Upstream) -> Outcome | None: ...
