"""What a follower of a job's log is told besides its bytes, as plain values: the daemon's
fan-out yields them (fanout.py) and the client library hands them out again (as LogHeartbeat,
LogEnd and LogTimeMark). One definition for both; light, so that the CLI starts fast."""

from __future__ import annotations

from dataclasses import dataclass

from tailhub.daemon.domain import JobState


@dataclass(frozen=True)
class Heartbeat:
    """Sent while a followed log is idle: the log's size and the job's state."""

    log_size: int
    state: JobState


@dataclass(frozen=True)
class Ended:
    """The last item of a stream: how the job stands at the end of what was sent."""

    state: JobState
    exit_code: int | None
    reason: str
    log_size: int
    finished: bool


@dataclass(frozen=True)
class TimeMark:
    """The bytes from `offset` on, up to the next mark, reached the daemon at `time` (Unix
    seconds). Sent before the chunk holding `offset`, when asked for with `timestamps`."""

    offset: int
    time: float
