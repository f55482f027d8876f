"""The `local` backend: tasks run on this machine by the local runner, as many at once as the
running limit allows; the others wait PENDING in submission order."""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
from dataclasses import replace
from pathlib import Path

from tailhub.daemon.backends.base import BackendHost, Cancelling
from tailhub.daemon.domain import JobRecord, JobState, LocalSpec, SourceSpec
from tailhub.daemon.errors import InvalidRequest, StorageFull
from tailhub.daemon.faults import AFTER_SPAWN, BEFORE_SPAWN, crash_at, is_disk_full
from tailhub.daemon.live_job import Job
from tailhub.daemon.runner import RunHandle
from tailhub.daemon.sources import SourceEnvironment
from tailhub.daemon.store import JobStore

# Resume state of a local job recorded before its process starts: the attempt number.
_LAUNCHING = "launching"

logger = logging.getLogger(__name__)


class LocalBackend:
    def __init__(self, host: BackendHost, environment: SourceEnvironment, store: JobStore):
        self._host = host
        self._environment = environment
        self._config = environment.config
        self._store = store
        # Jobs waiting for a free slot, in submission order.
        self._pending: collections.deque[Job] = collections.deque()
        # Jobs holding a running slot: a set, so a slot is freed once whatever fails.
        self._slots: set[int] = set()
        # Pending jobs a full disk kept from starting: their followers were told.
        self._waiting_for_space: set[int] = set()

    def check(self, spec: SourceSpec) -> None:
        assert isinstance(spec, LocalSpec)
        if not spec.run.strip():
            raise InvalidRequest("the task's `run` is empty: nothing to launch")
        if spec.workdir and not Path(spec.workdir).is_dir():
            raise InvalidRequest(f"workdir {spec.workdir} is not a directory")

    def submit(self, job: Job) -> None:
        self._pending.append(job)
        self.tick()

    def adopt(self, job: Job) -> None:
        if job.state is JobState.PENDING:
            if not self._recover_launch(job):
                self._pending.append(job)
            return
        # Running, or ended while we were away: the fetch finds out which.
        self._slots.add(job.id)
        self._host.start_fetcher(job, finishing=False)
        if job.record.cancel_requested:
            # The last daemon stopped within the grace: the SIGKILL is still owed.
            self._signal(job)

    def cancel(self, job: Job) -> Cancelling:
        if job.state is not JobState.RUNNING:
            return Cancelling.END_NOW  # still pending: never started, so ended at once
        self._signal(job)
        return Cancelling.ENDING

    def released(self, job: Job) -> None:
        if job.id in self._slots:
            # Its slot is free: the oldest pending job may start.
            self._slots.discard(job.id)
            self.tick()

    def tick(self) -> None:
        """Starts pending jobs, oldest first, while the running limit allows."""
        limit = self._config.max_running_jobs
        while self._pending and (limit is None or len(self._slots) < limit):
            job = self._pending.popleft()
            if job.state is JobState.PENDING and not self._start(job):
                # The disk is full: it stays first in line; the heartbeat tries again.
                self._pending.appendleft(job)
                return

    def _start(self, job: Job) -> bool:
        """Starts a pending job; False if a full disk keeps it waiting."""
        assert isinstance(job.record.spec, LocalSpec)
        record = job.record
        # Recorded before the process exists: a daemon killed before it records the pid
        # finds "launching" and looks for the process's claim instead of starting it twice.
        attempt = int(record.source_state.get(_LAUNCHING, 0)) + 1
        record.source_state = {_LAUNCHING: attempt}
        try:
            self._store.save(record)
            crash_at(self._config.crash_at, BEFORE_SPAWN)
            handle = self._environment.runner.start(job.id, job.record.spec, attempt)
        except Exception as error:  # whatever it is, it fails this job and no other
            if isinstance(error, StorageFull) or is_disk_full(error):
                if job.id not in self._waiting_for_space:
                    self._waiting_for_space.add(job.id)
                    self._host.record_event(job, f"disk full: the job waits to start ({error})")
                return False
            self._host.fail_start(job, error)
            return True
        self._waiting_for_space.discard(job.id)
        crash_at(self._config.crash_at, AFTER_SPAWN)
        self._run(job, handle)
        return True

    def _run(self, job: Job, handle: RunHandle) -> None:
        job.record.source_state = handle.to_json()
        self._host.mark_running(job)
        self._slots.add(job.id)
        self._host.start_fetcher(job, finishing=False)

    def _recover_launch(self, job: Job) -> bool:
        """A job the last daemon was launching when it died: adopt its process, if any.

        False when no process of that attempt ever claimed the job: the daemon has taken the
        claim itself (so a late one exits without running) and the job starts afresh.
        """
        attempt = job.record.source_state.get(_LAUNCHING)
        if not isinstance(attempt, int):
            return False
        pid = self._environment.runner.claim(job.id, attempt)
        if pid is None:
            return False
        logger.info("job %d: adopting process %d started by the last daemon", job.id, pid)
        self._run(job, RunHandle.of(pid))
        return True

    def _signal(self, job: Job) -> None:
        """SIGTERM to the job's process group now, SIGKILL after the grace period."""
        job.record.cancel_requested = True
        self._host.save_or_defer(job)
        handle = RunHandle.from_json(job.record.source_state)
        if handle is None:
            return
        runner = self._environment.runner
        runner.signal(handle, signal.SIGTERM)

        async def kill_after_grace() -> None:
            await asyncio.sleep(self._config.cancel_grace)
            runner.signal(handle, signal.SIGKILL)

        self._host.spawn(job, kill_after_grace(), name=f"kill-{job.id}")


def forget_launch_environment(record: JobRecord) -> None:
    """Lets an ended local job's launching environment go: only its start needed it, and it
    was most of what an ended job held in memory (~7 KB of strings a shell's environment;
    10,000 kept jobs were ~120 MB of RSS, issue 16, item 20). The database keeps it."""
    spec = record.spec
    if isinstance(spec, LocalSpec) and spec.environment:
        record.spec = replace(spec, environment=())
