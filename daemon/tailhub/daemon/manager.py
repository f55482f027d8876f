"""The job manager: creates jobs, runs their one fetcher each, and records how they end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tailhub.daemon import removal
from tailhub.daemon.admission import admit, claim_log, keep_ids_of_files, readmit, validate_attach
from tailhub.daemon.backends import Backend, Cancelling, make_backends
from tailhub.daemon.backends.local import forget_launch_environment
from tailhub.daemon.cancelling import CancelResult, cancel_jobs
from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.counts import DaemonCounts
from tailhub.daemon.domain import (
    JobRecord,
    JobState,
    LaunchSpec,
    SourceKind,
    SourceSpec,
    backend_of,
)
from tailhub.daemon.errors import InvalidRequest, JobNotFound, StorageFull
from tailhub.daemon.faults import HEARTBEAT, RETENTION
from tailhub.daemon.fetcher import Fetcher
from tailhub.daemon.fetches import Fetches
from tailhub.daemon.job_events import JobEvents
from tailhub.daemon.launch_keys import Key, LaunchKeys, task_of
from tailhub.daemon.live_job import LOG_UNCLAIMED, Job
from tailhub.daemon.open_files import start_failure
from tailhub.daemon.placement import ClusterView, Placed, Placement, Standalone
from tailhub.daemon.quotas import DescriptorBudget, JobQuota, descriptor_limit
from tailhub.daemon.removal import RemoveResult
from tailhub.daemon.retention import Retention
from tailhub.daemon.sink import LocalLog, LocalSink
from tailhub.daemon.sources import Outcome, SourceEnvironment, make_source
from tailhub.daemon.store import JobStore
from tailhub.daemon.supervisor import Supervisor
from tailhub.daemon.tasks import TaskSet

# Threads for `--tail` scans of long logs.
_SCAN_THREADS = 2
# How long past the grace period `cancel` waits for a killed job's log to be drained.
_CANCEL_MARGIN = 10.0

logger = logging.getLogger(__name__)


class JobManager:
    """Owns every job and every background task of the core. Not thread-safe: one event loop."""

    def __init__(
        self,
        config: DaemonConfig,
        store: JobStore,
        environment: SourceEnvironment,
        placement: Placement | None = None,
    ):
        self._config = config
        self._store = store
        self._environment = environment
        # Where jobs are fetched: here (one daemon), or where their lease is (cluster mode).
        self._placement: Placement = placement or Standalone()
        self._jobs: dict[int, Job] = {}
        # Every background task (fetches, kill timers, heartbeat) is owned and supervised here.
        self._supervised = TaskSet()
        # The daemon-wide loops (heartbeat, retention): essential, run by the supervisor.
        self._essentials = Supervisor()
        self._loops: list[asyncio.Task[Any]] = []
        # Each running job's one fetch.
        self._fetches = Fetches(
            self._supervised,
            self._fetcher,
            self._conclude,
            self.record_event,
            wait_to_fetch=self._placement.wait_to_fetch,
        )
        # Where launched tasks run, by name (see backends/).
        self._backends: dict[str, Backend] = make_backends(self, environment, store)
        # Jobs whose record could not be saved (full disk): saved again on each heartbeat.
        self._unsaved: set[int] = set()
        # Every job's events, within their limits.
        self._events = JobEvents(store)
        self._launches = LaunchKeys(store.launched_with, self._jobs, self._supervised.spawn)
        self.stopping = False
        self.started_at = time.time()
        # Totals since start that no job keeps (read by metrics).
        self.counts = DaemonCounts()
        self._retention = Retention(
            config, store, self._jobs, self.counts, self._placement.allows_removal, time.time
        )
        # `--tail` scans, apart from file sources' pool (a log with no newline is read whole).
        self.scans: ThreadPoolExecutor | None = None
        # Per token, jobs not ended and bytes of log; the descriptors jobs hold (quotas.py).
        limits = (config.max_jobs_per_token, self._is_open, config.max_log_bytes_per_token)
        self.quota = JobQuota(*limits, self._jobs)
        self.descriptors = DescriptorBudget(None)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, essentials: Supervisor | None = None) -> None:
        """Loads every job and resumes the fetch of those still running; the heartbeat and
        retention loops run under `essentials` (the daemon's supervisor)."""
        self.scans = ThreadPoolExecutor(_SCAN_THREADS, thread_name_prefix="tail-scan")
        self.descriptors = DescriptorBudget(descriptor_limit())
        keep_ids_of_files(self._config.paths, self._store)
        events = self._store.load_events()
        owners = self._store.owners()
        for record in self._store.load_all():
            if record.id in owners:
                self.quota.hold(owners[record.id], [record.id], ended=record.state.terminal)
            job = self._new_job(record)
            job.events = events.get(record.id, [])
            if record.sealed:
                forget_launch_environment(record)
            if not record.sealed and self._placement.may_fetch(job):
                try:
                    readmit(self.descriptors, record.spec, owners.get(record.id))
                    self._resume(job)
                except Exception as error:  # one bad job must not keep the daemon down
                    self.fail_start(job, error)
        for backend in self._backends.values():
            backend.tick()
        if essentials is not None:
            self._essentials = essentials
        self._loops = [
            self._essentials.spawn(self._beat(), name=HEARTBEAT),
            self._essentials.spawn(self._apply_retention(), name=RETENTION),
        ]

    def resume(self, job: Job) -> None:
        """Resumes the fetch of a job this daemon has just become the fetcher of."""
        try:
            self._resume(job)
        except Exception as error:
            self.fail_start(job, error)

    def _resume(self, job: Job) -> None:
        backend = self._backend_of(job)
        if backend is not None:
            backend.adopt(job)
        elif job.record.spec.kind is SourceKind.PUSH:
            self._fetches.cut_unacknowledged(job)
            if job.state.terminal:
                self._seal(job)
            else:
                self.start_fetcher(job, finishing=False)
        else:
            self.start_fetcher(job, finishing=job.state.terminal)

    def _backend_of(self, job: Job) -> Backend | None:
        """The backend running a launched job; None for an attached one."""
        name = backend_of(job.record.spec)
        return self._backends[name] if name else None

    def begin_stop(self) -> None:
        """Tells every subscriber to end its stream with "daemon stopping"."""
        self.stopping = True
        for job in self._jobs.values():
            job.changed.notify()

    async def close(self) -> None:
        """Stops fetching (jobs stay as they are: a restarted daemon resumes them)."""
        await self._essentials.cancel(self._loops)
        await self._supervised.aclose()
        self._fetches.clear()
        self._retention.close()
        if self.scans is not None:
            self.scans.shutdown(wait=False, cancel_futures=True)
        for job in self._jobs.values():
            job.close()

    # -- queries -----------------------------------------------------------------------------
    def _is_open(self, job_id: int) -> bool:
        job = self._jobs.get(job_id)
        return job is not None and not job.state.terminal

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
    async def attach(self, name: str, spec: SourceSpec, owner: str | None = None) -> Job:
        """Attaches an external job; `owner`: the token it belongs to (None: the owner's)."""
        validate_attach(spec)
        admit(self.quota, self.descriptors, spec, owner, launched=False)
        record = self._store.create(name, spec, await self._placement.new_job_id(), owner)
        self.quota.hold(owner, [record.id])
        if not self._claim_log(record):
            return self._jobs[record.id]
        job = self._new_job(record)
        record.state = JobState.RUNNING
        record.started_at = time.time()
        self.save_or_defer(job)
        await self._claim_new(job)
        self.start_fetcher(job, finishing=False)
        return job

    async def _claim_new(self, job: Job) -> None:
        try:
            await self._placement.claim_new(job)
        except Exception as error:
            self.fail_start(job, error)
            raise

    async def launch(self, name: str, spec: LaunchSpec, owner: str | None, key: Key = None) -> Job:
        """Records a task and hands it to its backend; once per key (launch_keys.py)."""
        asked = task_of(name, spec)
        return await self._launches.once(key, asked, lambda: self._launch(name, spec, owner, key))

    async def _launch(self, name: str, spec: LaunchSpec, owner: str | None, key: Key) -> Job:
        backend = self._backends.get(spec.backend)
        if backend is None:  # (a SkyPilot spec without its task: attached, not launched)
            raise InvalidRequest("nothing to launch: the task is missing")
        backend.check(spec)
        admit(self.quota, self.descriptors, spec, owner, launched=True)
        record = self._store.create(name, spec, await self._placement.new_job_id(), owner, key)
        self.quota.hold(owner, [record.id])
        if not self._claim_log(record):
            return self._jobs[record.id]
        job = self._new_job(record)
        await self._claim_new(job)
        backend.submit(job)
        return job

    async def publish(self, job_id: int, data: bytes, expected_offset: int | None = None) -> int:
        """Appends to a push job's log; returns its size.

        With `expected_offset`, a call is idempotent: a retry of one already applied (the
        same bytes at the same offset) appends nothing, any other mismatch is refused.
        """
        return await self._fetches.publish(self.get(job_id), data, expected_offset)

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
        self._fetches.request_finish(job)
        return job

    async def cancel(self, job_ids: list[int], everything: bool) -> CancelResult:
        """Cancels jobs and returns once those stopping here have ended (local ones may take
        the grace); those whose cancel was asked of another system (SkyPilot) are returned
        as they are, still ending, with the reason "cancel requested".

        Named jobs that are unknown or already ended are reported, not an error: the others
        are cancelled all the same. A job not ended in time is returned still ending too.
        """
        return await cancel_jobs(
            self._jobs,
            job_ids,
            everything,
            stop=self._cancel_one,
            save=self.save_or_defer,
            wait=self._config.cancel_grace + _CANCEL_MARGIN,
        )

    def _cancel_one(self, job: Job) -> Cancelling:
        if self._placement.cancel_elsewhere(job):
            return Cancelling.ENDING  # its fetcher, elsewhere, reports the end
        backend = self._backend_of(job)
        cancelling = Cancelling.END_NOW if backend is None else backend.cancel(job)
        if cancelling is Cancelling.END_NOW:
            self.end_now(job, "cancelled")
        return cancelling

    def remove(self, job_ids: list[int], *, ended_before: float | None) -> RemoveResult:
        """Deletes ended jobs: their records, events, log and run directory."""
        if not self._placement.allows_removal():
            raise InvalidRequest(
                "jobs are not removed in cluster mode yet: Redis keeps the last "
                "--redis-retention bytes of each log"
            )
        return self._retention.remove(job_ids, ended_before)

    def on_removed(self, listener: Callable[[list[int]], None]) -> None:
        """Calls `listener` with the ids of jobs removed (by a call or retention), once gone."""
        self._retention.listeners.append(listener)

    def remove_expired(self, now: float) -> RemoveResult:
        """Applies the retention policy once."""
        return self._retention.apply(now)

    async def _apply_retention(self) -> None:
        while True:
            try:
                self.remove_expired(time.time())
            except Exception:  # keep the daemon and try again at the next round
                logger.exception("applying the retention policy failed")
            await asyncio.sleep(removal.RETENTION_INTERVAL)

    def cluster_view(self) -> ClusterView | None:
        return self._placement.view()

    async def prepare_read(self, job: Job, *, catch_up: bool = False) -> None:
        """A subscriber starts reading the job: where it is fetched elsewhere, its bytes
        are read here now (with `catch_up`, until this daemon has what was fetched)."""
        await self._placement.prepare_read(job, catch_up=catch_up)

    # -- JobsPort (placement.py): what the placement may do with the jobs ---------------------
    def adopt(self, record: JobRecord, placed: Placed) -> Job:
        """A job another daemon created: recorded here, with its place."""
        self._store.insert(record)
        job = self._jobs.get(record.id)
        if job is None:
            if not self._claim_log(record):
                return self._jobs[record.id]
            job = self._new_job(record)
        job.placed = placed
        return job

    def stop_fetching(self, job: Job) -> None:
        """Stops the job's fetch without ending the job (another daemon fetches it now)."""
        self._fetches.stop(job)

    def local_log(self, job: Job) -> LocalLog:
        return LocalLog(job, self)

    def tell_followers(self, job: Job, message: str) -> None:
        """An event for this daemon's followers only (the cluster's state, as seen here)."""
        self._events.tell_followers(job, message)

    def ended_elsewhere(self, job: Job) -> None:
        """The job's last byte and its end arrived: it ends here as it ended there."""
        job.changed.notify()
        self._seal(job)

    # -- FetchOwner --------------------------------------------------------------------------
    def appended(self, job: Job) -> None:
        if job.state is JobState.PENDING:
            # A backend's job (SkyPilot) runs once its log flows.
            self.mark_running(job)
        job.changed.notify()

    def save_or_raise(self, job: Job) -> None:
        self._store.save(job.record)
        self._placement.saved(job)

    def record_event(self, job: Job, message: str) -> None:
        self._events.record_event(job, message)

    def copied_event(self, job: Job, message: str) -> None:
        self._events.copied(job, message)

    # -- internals ---------------------------------------------------------------------------
    def _new_job(self, record: JobRecord) -> Job:
        paths = self._config.paths
        job = Job(
            record,
            paths.job_log(record.id),
            self._config.memory_window_bytes,
            paths.job_times(record.id),
            paths.job_acked(record.id),
            self._config.crash_at,
        )
        self._jobs[record.id] = job
        return job

    def _claim_log(self, record: JobRecord) -> bool:
        """Creates a new job's log file. False when it cannot: the job is then recorded
        FAILED with the reason, and the file already there (another database's log, or
        something planted) is never read as this job's log."""
        refused = claim_log(self._config.paths.job_log(record.id))
        if refused is None:
            return True
        reason, disk_full = refused
        record.state, record.reason, record.sealed = JobState.FAILED, reason, True
        record.ended_at = time.time()
        record.source_state = {LOG_UNCLAIMED: True}
        self.save_or_defer(self._new_job(record))
        if disk_full:
            raise StorageFull(f"job {record.id} failed: {reason}")
        logger.warning("job %d: %s", record.id, reason)
        return False

    def save_or_defer(self, job: Job) -> None:
        """Saves a record whose in-memory state is already set; a full disk only delays it."""
        try:
            self._store.save(job.record)
        except StorageFull as error:
            if job.id not in self._unsaved:
                logger.warning("job %d: state not saved yet: %s", job.id, error)
            self._unsaved.add(job.id)
        else:
            self._unsaved.discard(job.id)
        self._placement.saved(job)

    # -- BackendHost ---------------------------------------------------------------------------
    def spawn(self, job: Job, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        self._supervised.spawn(
            coro, name=name, on_crash=lambda error: self.fail_start(job, f"{name}: {error}")
        )

    def end_now(self, job: Job, reason: str) -> None:
        """Ends a job CANCELLED without waiting for its upstream: the fetch is stopped."""
        if not job.state.terminal:
            self._end(job, JobState.CANCELLED, None, reason)
        self._fetches.cancel(job)
        self._seal(job)

    def mark_running(self, job: Job) -> None:
        record = job.record
        record.state = JobState.RUNNING
        record.started_at = time.time()
        self.save_or_defer(job)
        job.changed.notify()

    def fail_start(self, job: Job, error: Exception | str) -> None:
        what = "cannot start" if job.state is JobState.PENDING else "fails"
        logger.warning("job %d %s: %s", job.id, what, error)
        if not job.state.terminal:  # (a str: the backend's own words, SkyPilot's message)
            reason = error if isinstance(error, str) else start_failure(error)
            self._end(job, JobState.FAILED, None, reason)
        self._seal(job)

    def start_fetcher(self, job: Job, *, finishing: bool) -> None:
        self._fetches.start(job, finishing=finishing)

    def _fetcher(self, job: Job) -> Fetcher:
        source = make_source(job.id, job.record.spec, self._environment)
        sink = self._placement.make_sink(job, LocalSink(job, LocalLog(job, self), self.counts))
        return Fetcher(job, source, sink, self, self._config, self.counts)

    def _conclude(self, job: Job, outcome: Outcome | None) -> None:
        """After the fetch: records how the job ended, seals it and tells its backend."""
        try:
            if outcome is not None and not job.state.terminal:
                if outcome.state is not None:
                    state, reason = outcome.state, outcome.reason
                elif job.record.cancel_requested:
                    state, reason = JobState.CANCELLED, f"cancelled ({outcome.reason})"
                else:
                    state, reason = JobState.from_exit_code(outcome.exit_code), outcome.reason
                self._end(job, state, outcome.exit_code, reason)
            self._seal(job)
        finally:
            backend = self._backend_of(job)
            if backend is not None:
                backend.released(job)

    def _end(self, job: Job, state: JobState, exit_code: int | None, reason: str) -> None:
        record = job.record
        record.state = state
        record.exit_code = exit_code
        record.reason = reason
        record.ended_at = time.time()
        job.changed.notify()
        self.save_or_defer(job)

    def _seal(self, job: Job) -> None:
        self._events.report_dropped(job, final=True)
        job.record.sealed = True
        forget_launch_environment(job.record)
        job.changed.notify()
        job.release_log_if_idle()
        self.save_or_defer(job)
        self._retention.job_ended()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._config.heartbeat_interval)
            self._events.report_all_dropped(self._jobs)
            for job_id in list(self._unsaved):
                unsaved = self._jobs.get(job_id)
                if unsaved is None:  # removed meanwhile
                    self._unsaved.discard(job_id)
                else:
                    self.save_or_defer(unsaved)
            for backend in self._backends.values():  # a job may wait for disk space
                backend.tick()
            for job in self._jobs.values():
                if job.changed.waiting:
                    job.heartbeat_tick += 1
                    job.changed.notify()
