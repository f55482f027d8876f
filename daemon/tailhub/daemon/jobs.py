"""The job manager: creates jobs, runs their one fetcher each, and records how they end."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tailhub.daemon import removal
from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.events import EventLimiter, EventLimits
from tailhub.daemon.fetcher import Fetcher
from tailhub.daemon.job import Job
from tailhub.daemon.model import (
    CommandSpec,
    FileSpec,
    InvalidRequest,
    JobNotFound,
    JobRecord,
    JobState,
    LocalSpec,
    PushSpec,
    SourceEvent,
    SourceKind,
    SourceSpec,
)
from tailhub.daemon.removal import RemoveResult
from tailhub.daemon.runner import RunHandle
from tailhub.daemon.sources import (
    Outcome,
    SourceEnvironment,
    UpstreamUnusable,
    make_source,
)
from tailhub.daemon.store import JobStore

# How long past the grace period `cancel` waits for a killed job's log to be drained.
_CANCEL_MARGIN = 10.0

logger = logging.getLogger(__name__)


@dataclass
class CancelResult:
    cancelled: list[Job] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    already_ended: list[Job] = field(default_factory=list)


class JobManager:
    """Owns every job and every background task of the core. Not thread-safe: one event loop."""

    def __init__(self, config: DaemonConfig, store: JobStore, environment: SourceEnvironment):
        self._config = config
        self._store = store
        self._environment = environment
        self._jobs: dict[int, Job] = {}
        self._fetchers: dict[int, Fetcher] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._kill_timers: set[asyncio.Task[None]] = set()
        # Local jobs waiting for a free slot, in submission order.
        self._pending: collections.deque[Job] = collections.deque()
        self._running_local = 0
        # Per job, created with its first event: how many more it may keep, and how fast.
        self._event_limiters: dict[int, EventLimiter] = {}
        self.stopping = False
        self.started_at = time.time()

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Loads every job and resumes the fetch of those still running."""
        events = self._store.load_events()
        for record in self._store.load_all():
            job = self._new_job(record)
            job.events = events.get(record.id, [])
            if not record.sealed:
                try:
                    self._resume(job)
                except Exception as error:  # one bad job must not keep the daemon down
                    self._fail_start(job, error)
        self._schedule()
        self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")
        self._retention = asyncio.create_task(self._apply_retention(), name="retention")

    def _resume(self, job: Job) -> None:
        kind = job.record.spec.kind
        if kind is SourceKind.LOCAL:
            if job.state is JobState.PENDING:
                self._pending.append(job)
            else:  # running, or ended while we were away: the fetch finds out which
                self._start_fetcher(job, finishing=False)
                self._running_local += 1
                if job.record.cancel_requested:
                    # The last daemon stopped within the grace: the SIGKILL is still owed.
                    self._signal_local(job)
        elif kind is SourceKind.PUSH and job.state.terminal:
            self._seal(job)
        else:
            self._start_fetcher(job, finishing=job.state.terminal)

    def begin_stop(self) -> None:
        """Tells every subscriber to end its stream with "daemon stopping"."""
        self.stopping = True
        for job in self._jobs.values():
            job.changed.notify()

    async def close(self) -> None:
        """Stops fetching (jobs stay as they are: a restarted daemon resumes them)."""
        tasks = [*self._tasks.values(), *self._kill_timers]
        if self._heartbeat is not None:
            tasks.append(self._heartbeat)
        if self._retention is not None:
            tasks.append(self._retention)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        for job in self._jobs.values():
            job.close()

    # -- queries -----------------------------------------------------------------------------
    def get(self, job_id: int) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None

    def all_jobs(self) -> list[Job]:
        return list(self._jobs.values())

    @property
    def job_count(self) -> int:
        return len(self._jobs)

    def newest(self, count: int, *, below: int | None = None) -> tuple[list[Job], bool]:
        """Up to `count` jobs, newest first, with ids below `below`; and whether more follow."""
        ids = sorted((i for i in self._jobs if below is None or i < below), reverse=True)
        return [self._jobs[i] for i in ids[:count]], len(ids) > count

    # -- commands ----------------------------------------------------------------------------
    def attach(self, name: str, spec: SourceSpec) -> Job:
        _validate_attach(spec)
        record = self._store.create(name, spec)
        job = self._new_job(record)
        record.state = JobState.RUNNING
        record.started_at = time.time()
        self._store.save(record)
        self._start_fetcher(job, finishing=False)
        return job

    def launch(self, name: str, spec: LocalSpec) -> Job:
        """Records a task for the local runner; it starts when a slot is free."""
        if not spec.run.strip():
            raise InvalidRequest("the task's `run` is empty: nothing to launch")
        if spec.workdir and not Path(spec.workdir).is_dir():
            raise InvalidRequest(f"workdir {spec.workdir} is not a directory")
        job = self._new_job(self._store.create(name, spec))
        self._pending.append(job)
        self._schedule()
        return job

    def publish(self, job_id: int, data: bytes) -> int:
        job = self.get(job_id)
        if job.record.spec.kind is not SourceKind.PUSH:
            raise InvalidRequest(f"job {job_id} is not a push job; only push jobs take bytes")
        if job.state.terminal:
            raise InvalidRequest(
                f"job {job_id} has ended ({job.state.value}); it takes no more bytes"
            )
        job.log.append(data)
        self.appended(job)
        return job.log_size

    def finish(self, job_id: int, exit_code: int, reason: str) -> Job:
        job = self.get(job_id)
        if job.record.spec.kind not in (SourceKind.FILE, SourceKind.PUSH):
            raise InvalidRequest(
                f"job {job_id} is a {job.record.spec.kind.value} job; it ends by itself "
                "(cancel it to stop it)"
            )
        if job.state.terminal:
            raise InvalidRequest(f"job {job_id} has already ended ({job.state.value})")
        self._end(
            job, JobState.from_exit_code(exit_code), exit_code, reason or "finished through the API"
        )
        fetcher = self._fetchers.get(job_id)
        if fetcher is not None:
            fetcher.request_finish()
        return job

    async def cancel(self, job_ids: list[int], everything: bool) -> CancelResult:
        """Cancels jobs and returns once they have ended (local ones may take the grace).

        Named jobs that are unknown or already ended are reported, not an error: the others
        are cancelled all the same.
        """
        result = CancelResult()
        chosen = {
            job.id: job for job in self._jobs.values() if everything and not job.state.terminal
        }
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is None:
                result.unknown.append(job_id)
            elif job.state.terminal:
                result.already_ended.append(job)
            else:
                chosen[job_id] = job
        targets = list(chosen.values())
        for job in targets:
            if job.record.spec.kind is SourceKind.LOCAL and job.state is JobState.RUNNING:
                self._signal_local(job)
                continue
            self._end(job, JobState.CANCELLED, None, "cancelled")
            task = self._tasks.get(job.id)
            if task is not None:
                task.cancel()
            self._seal(job)
        await asyncio.wait_for(
            asyncio.gather(*(self._sealed(job) for job in targets)),
            self._config.cancel_grace + _CANCEL_MARGIN,
        )
        result.cancelled = targets
        return result

    def remove(self, job_ids: list[int], *, ended_before: float | None) -> RemoveResult:
        """Deletes ended jobs: their records, events, log and run directory."""
        doomed, result = removal.choose(self._jobs, job_ids, ended_before)
        removal.delete(doomed, self._jobs, self._store, self._config.paths, result)
        return result

    def remove_expired(self, now: float) -> RemoveResult:
        """Applies the retention policy once."""
        config = self._config
        doomed = removal.expired(
            self._jobs.values(), now, config.retention_seconds, config.max_ended_jobs
        )
        result = removal.RemoveResult()
        removal.delete(doomed, self._jobs, self._store, config.paths, result)
        return result

    async def _apply_retention(self) -> None:
        while True:
            try:
                self.remove_expired(time.time())
            except Exception:  # keep the daemon and try again at the next round
                logger.exception("applying the retention policy failed")
            await asyncio.sleep(removal.RETENTION_INTERVAL)

    def _signal_local(self, job: Job) -> None:
        """SIGTERM to the job's process group now, SIGKILL after the grace period."""
        job.record.cancel_requested = True
        self._store.save(job.record)
        handle = RunHandle.from_json(job.record.source_state)
        if handle is None:
            return
        self._environment.runner.signal(handle, signal.SIGTERM)

        async def kill_after_grace() -> None:
            await asyncio.sleep(self._config.cancel_grace)
            self._environment.runner.signal(handle, signal.SIGKILL)

        timer = asyncio.create_task(kill_after_grace(), name=f"kill-{job.id}")
        self._kill_timers.add(timer)
        timer.add_done_callback(self._kill_timers.discard)

    @staticmethod
    async def _sealed(job: Job) -> None:
        while not job.sealed:
            await job.changed.wait()

    # -- FetchOwner --------------------------------------------------------------------------
    def appended(self, job: Job) -> None:
        job.changed.notify()

    def save(self, job: Job) -> None:
        self._store.save(job.record)

    def event(self, job: Job, message: str) -> None:
        limiter = self._event_limiters.get(job.id)
        if limiter is None:
            limiter = EventLimiter(EventLimits(), kept=len(job.events))
            self._event_limiters[job.id] = limiter
        for kept in limiter.offer(message):
            self._keep_event(job, kept)

    def _keep_event(self, job: Job, message: str) -> None:
        event = SourceEvent(job.log_size, message, time.time())
        job.events.append(event)
        self._store.add_event(job.id, event)
        logger.info("job %d: %s", job.id, message)
        job.changed.notify()

    def _report_dropped_events(self, job: Job, *, final: bool) -> None:
        """Tells followers how many events were dropped, once the limits allow (or at the end)."""
        limiter = self._event_limiters.get(job.id)
        message = None if limiter is None else limiter.flush(final=final)
        if message is not None:
            self._keep_event(job, message)
        if final:
            self._event_limiters.pop(job.id, None)

    # -- internals ---------------------------------------------------------------------------
    def _new_job(self, record: JobRecord) -> Job:
        job = Job(record, self._config.paths.job_log(record.id), self._config.memory_window_bytes)
        self._jobs[record.id] = job
        return job

    def _schedule(self) -> None:
        """Starts pending local jobs, oldest first, while the running limit allows."""
        limit = self._config.max_running_jobs
        while self._pending and (limit is None or self._running_local < limit):
            job = self._pending.popleft()
            if job.state is JobState.PENDING:
                self._start_local(job)

    def _start_local(self, job: Job) -> None:
        try:
            assert isinstance(job.record.spec, LocalSpec)
            handle = self._environment.runner.start(job.id, job.record.spec)
        except Exception as error:  # whatever it is, it fails this job and no other
            self._fail_start(job, error)
            return
        record = job.record
        record.source_state = handle.to_json()
        record.state = JobState.RUNNING
        record.started_at = time.time()
        self._store.save(record)
        job.changed.notify()
        self._running_local += 1
        self._start_fetcher(job, finishing=False)

    def _fail_start(self, job: Job, error: Exception) -> None:
        logger.warning("job %d cannot start: %s", job.id, error)
        if not job.state.terminal:
            self._end(job, JobState.FAILED, None, f"cannot start the job: {error}")
        self._seal(job)

    def _start_fetcher(self, job: Job, *, finishing: bool) -> None:
        source = make_source(job.id, job.record.spec, self._environment)
        fetcher = Fetcher(job, source, self, self._config)
        if finishing:
            fetcher.request_finish()
        self._fetchers[job.id] = fetcher
        self._tasks[job.id] = asyncio.create_task(self._fetch(job, fetcher), name=f"fetch-{job.id}")

    async def _fetch(self, job: Job, fetcher: Fetcher) -> None:
        try:
            outcome: Outcome | None = await fetcher.run()
        except UpstreamUnusable as error:
            outcome = Outcome(error.exit_code, str(error))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug or an I/O error: fail the job, keep the daemon
            logger.exception("fetcher of job %d failed", job.id)
            outcome = Outcome(1, f"fetching failed: {error}")
        finally:
            self._fetchers.pop(job.id, None)
            self._tasks.pop(job.id, None)
        if outcome is not None and not job.state.terminal:
            if job.record.cancel_requested:
                state, reason = JobState.CANCELLED, f"cancelled ({outcome.reason})"
            else:
                state, reason = JobState.from_exit_code(outcome.exit_code), outcome.reason
            self._end(job, state, outcome.exit_code, reason)
        self._seal(job)
        if job.record.spec.kind is SourceKind.LOCAL:
            # Its slot is free: the oldest pending job may start.
            self._running_local -= 1
            self._schedule()

    def _end(self, job: Job, state: JobState, exit_code: int | None, reason: str) -> None:
        record = job.record
        record.state = state
        record.exit_code = exit_code
        record.reason = reason
        record.ended_at = time.time()
        self._store.save(record)
        job.changed.notify()

    def _seal(self, job: Job) -> None:
        self._report_dropped_events(job, final=True)
        job.record.sealed = True
        self._store.save(job.record)
        job.changed.notify()
        job.release_log_if_idle()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._config.heartbeat_interval)
            for job_id in [*self._event_limiters]:
                if job_id in self._jobs:  # (a removed job has nothing left to report)
                    self._report_dropped_events(self._jobs[job_id], final=False)
            for job in self._jobs.values():
                if job.changed.waiting:
                    job.heartbeat_tick += 1
                    job.changed.notify()


def _validate_attach(spec: SourceSpec) -> None:
    if isinstance(spec, FileSpec):
        path = Path(spec.path)
        if not path.is_absolute():
            raise InvalidRequest(f"file path must be absolute: {spec.path}")
        if not path.exists():
            raise InvalidRequest(f"no such file: {spec.path}")
        if path.is_dir():
            raise InvalidRequest(f"{spec.path} is a directory, not a file")
        if not os.access(path, os.R_OK):
            raise InvalidRequest(f"cannot read {spec.path}: permission denied")
    elif isinstance(spec, CommandSpec):
        if not spec.argv or not spec.argv[0]:
            raise InvalidRequest("command is empty")
    elif not isinstance(spec, PushSpec):
        raise InvalidRequest("attach takes a file, command or push source")
