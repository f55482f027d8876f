"""What every backend implements, and what the job manager offers it.

A backend turns a recorded task into a running job and, from then on, a source; everything
after the source (the fetch, the log, followers, the end and the seal) is shared and stays
with the job manager.
"""

from __future__ import annotations

import enum
from collections.abc import Coroutine
from typing import Any, Protocol

from tailhub.daemon.domain import SourceSpec
from tailhub.daemon.live_job import Job


class Cancelling(enum.Enum):
    """What `Backend.cancel` did, and so whether CancelJobs waits for the job's end."""

    # Never started: the job manager ends it at once.
    END_NOW = "end now"
    # Stopping here: its fetch reports the end within the cancel grace; CancelJobs waits.
    ENDING = "ending"
    # Asked of another system (SkyPilot), which may take minutes: CancelJobs does not wait.
    REQUESTED = "requested"


class BackendHost(Protocol):
    """The job manager, as a backend sees it."""

    def spawn(self, job: Job, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        """Runs `coro` supervised: if it crashes, the job fails with the error."""

    def start_fetcher(self, job: Job, *, finishing: bool) -> None: ...

    def fail_start(self, job: Job, error: Exception | str) -> None:
        """Fails a job that could not start (with the reason) and seals it."""

    def mark_running(self, job: Job) -> None: ...

    def end_now(self, job: Job, reason: str) -> None:
        """Ends the job CANCELLED and stops its fetch, without waiting for its upstream."""

    def save_or_defer(self, job: Job) -> None:
        """Saves the job's record; a full disk only delays it."""

    def record_event(self, job: Job, message: str) -> None: ...


class Backend(Protocol):
    """Where a launched task runs. One instance per daemon, chosen by name."""

    def check(self, spec: SourceSpec) -> None:
        """Refuses (InvalidRequest) a task this backend cannot run, before it is recorded."""

    def submit(self, job: Job) -> None:
        """Starts a newly recorded job, or queues it; never blocks."""

    def adopt(self, job: Job) -> None:
        """Takes back an unsealed job of this backend found when the daemon starts."""

    def cancel(self, job: Job) -> Cancelling:
        """Asks a job to stop; says whether to end it now, wait for its end, or neither."""

    def released(self, job: Job) -> None:
        """The job's fetch is over: whatever it held is free."""

    def tick(self) -> None:
        """Called at start and on each heartbeat: retry what waits (for a slot, for space)."""
