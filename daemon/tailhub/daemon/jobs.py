"""The job manager: creates jobs, runs their one fetcher each, and records how they end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailhub.daemon import removal
from tailhub.daemon.backends import Backend, Cancelling, make_backends
from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.counts import DaemonCounts
from tailhub.daemon.events import EventLimiter, EventLimits
from tailhub.daemon.faults import is_disk_full
from tailhub.daemon.fetcher import Fetcher
from tailhub.daemon.identity import highest_job_id
from tailhub.daemon.job import LOG_UNCLAIMED, Job
from tailhub.daemon.model import (
    CommandSpec,
    FileSpec,
    InvalidRequest,
    JobNotFound,
    JobRecord,
    JobState,
    LaunchSpec,
    OffsetMismatch,
    PushSpec,
    SkyPilotSpec,
    SourceEvent,
    SourceKind,
    SourceSpec,
    StorageFull,
    backend_of,
)
from tailhub.daemon.open_files import out_of_descriptors, start_failure
from tailhub.daemon.paths import shown
from tailhub.daemon.placement import ClusterView, Placement, Standalone
from tailhub.daemon.quotas import DescriptorBudget, JobQuota, descriptor_limit
from tailhub.daemon.removal import RemoveResult
from tailhub.daemon.sources import (
    Outcome,
    SourceEnvironment,
    UpstreamUnusable,
    make_source,
)
from tailhub.daemon.store import JobStore
from tailhub.daemon.tasks import TaskSet

# Threads for `--tail` scans of long logs.
_SCAN_THREADS = 2
# How long past the grace period `cancel` waits for a killed job's log to be drained.
_CANCEL_MARGIN = 10.0
# Descriptors a job holds while it runs, by source (its log and its upstream; a push job's
# log is opened per call, and a local job writes its own): what admission counts.
_DESCRIPTORS_HELD = {
    SourceKind.FILE: 2,  # the file followed, the log
    SourceKind.COMMAND: 4,  # stdout and stderr pipes, the child, the log
    SourceKind.SKYPILOT: 4,  # a `sky jobs logs` command's
    SourceKind.LOCAL: 2,
}
# How many jobs may end past --max-ended-jobs before a pass removes the oldest.
_CAP_SLACK = 100
# Seconds from a job's end to the pass that keeps ended logs within --retain-logs (jobs
# ending meanwhile share it).
_BUDGET_PASS_DELAY = 1.0

logger = logging.getLogger(__name__)


@dataclass
class CancelResult:
    cancelled: list[Job] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    already_ended: list[Job] = field(default_factory=list)


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
        self._fetchers: dict[int, Fetcher] = {}
        # Every background task (fetches, kill timers, heartbeat) is owned and supervised here.
        self._supervised = TaskSet()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # Where launched tasks run, by name (see backends/).
        self._backends: dict[str, Backend] = make_backends(self, environment, store)
        # Jobs whose record could not be saved (full disk): saved again on each heartbeat.
        self._unsaved: set[int] = set()
        # Per job, created with its first event: how many more it may keep, and how fast.
        self._event_limiters: dict[int, EventLimiter] = {}
        # Jobs ended since the last pass that kept --max-ended-jobs.
        self._ended_since_cap_pass = 0
        # The retention pass that keeps --retain-logs, when one is due.
        self._budget_pass: asyncio.TimerHandle | None = None
        self.stopping = False
        self.started_at = time.time()
        # Totals since start that no job keeps (read by metrics).
        self.counts = DaemonCounts()
        # `--tail` scans, apart from the default pool that file sources read with: a long
        # log without a newline is read to its start, and nobody else should wait for it.
        self.scans: ThreadPoolExecutor | None = None
        # Jobs not ended per token, and the descriptors jobs may hold (quotas.py).
        self.quota = JobQuota(config.max_jobs_per_token, self._is_open)
        self.descriptors = DescriptorBudget(None)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Loads every job and resumes the fetch of those still running."""
        self.scans = ThreadPoolExecutor(_SCAN_THREADS, thread_name_prefix="tail-scan")
        self.descriptors = DescriptorBudget(descriptor_limit())
        self._keep_ids_of_files()
        events = self._store.load_events()
        owners = self._store.owners()
        for record in self._store.load_all():
            if not record.state.terminal and record.id in owners:
                self.quota.hold(owners[record.id], [record.id])
            job = self._new_job(record)
            job.events = events.get(record.id, [])
            if not record.sealed and self._placement.may_fetch(job):
                try:
                    self._resume(job)
                except Exception as error:  # one bad job must not keep the daemon down
                    self.fail_start(job, error)
        for backend in self._backends.values():
            backend.tick()
        self._supervised.spawn(self._beat(), name="heartbeat")
        self._supervised.spawn(self._apply_retention(), name="retention")

    def _keep_ids_of_files(self) -> None:
        """Job ids are never given again (README): not even those a database restored
        from an older copy has no record of, whose logs are still here."""
        taken = highest_job_id(self._config.paths)
        try:
            if self._store.keep_ids_above(taken):
                logger.warning(
                    "logs/ or runs/ hold files of job %d, which the database does not know "
                    "(an older copy restored?): new jobs get ids above it",
                    taken,
                )
        except StorageFull as error:
            # Then a launch whose id has a log already fails with that reason (_claim_log).
            logger.warning("job ids above %d not reserved: %s", taken, error)

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
            self._cut_unacknowledged(job)
            if job.state.terminal:
                self._seal(job)
            else:
                self.start_fetcher(job, finishing=False)
        else:
            self.start_fetcher(job, finishing=job.state.terminal)

    def _cut_unacknowledged(self, job: Job) -> None:
        """Cuts a push log back to the end its publishers were last told (acked.py): what
        lies past it is a piece of a Publish the daemon died writing, never answered, and
        would block its retry. Before anyone is served (start, before the socket)."""
        acknowledged = job.acked.read()
        if acknowledged is None or job.log_size <= acknowledged:
            return
        torn = job.log_size - acknowledged
        job.log.truncate(acknowledged)
        self.event(
            job,
            f"{torn} bytes of a publish never acknowledged (the daemon stopped while writing "
            f"it) were cut off; the log ends at offset {acknowledged}, where its publisher "
            "resumes",
        )

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
        await self._supervised.aclose()
        self._tasks.clear()
        if self._budget_pass is not None:
            self._budget_pass.cancel()
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
        _validate_attach(spec)
        self._admit(spec, owner, launched=False)
        record = self._store.create(name, spec, await self._placement.new_job_id(), owner)
        self.quota.hold(owner, [record.id])
        if not self._claim_log(record):
            return self._jobs[record.id]
        job = self._new_job(record)
        record.state = JobState.RUNNING
        record.started_at = time.time()
        self.save_record(job)
        await self._claim_new(job)
        self.start_fetcher(job, finishing=False)
        return job

    async def _claim_new(self, job: Job) -> None:
        try:
            await self._placement.claim_new(job)
        except Exception as error:
            self.fail_start(job, error)
            raise

    async def launch(self, name: str, spec: LaunchSpec, owner: str | None = None) -> Job:
        """Records a task and hands it to its backend (it may wait PENDING for a slot)."""
        backend = self._backends.get(spec.backend)
        if backend is None:  # (a SkyPilot spec without its task: attached, not launched)
            raise InvalidRequest("nothing to launch: the task is missing")
        backend.check(spec)
        self._admit(spec, owner, launched=True)
        record = self._store.create(name, spec, await self._placement.new_job_id(), owner)
        self.quota.hold(owner, [record.id])
        if not self._claim_log(record):
            return self._jobs[record.id]
        job = self._new_job(record)
        await self._claim_new(job)
        backend.submit(job)
        return job

    def _admit(self, spec: SourceSpec, owner: str | None, *, launched: bool) -> None:
        """Refuses a job past its token's quota, or one that would hold descriptors the
        daemon keeps for itself; the owner's launches are never refused (they are what the
        reserve is for)."""
        self.quota.check(owner)
        if launched and owner is None:
            return
        kind = spec.kind
        self.descriptors.admit(kind.value, _DESCRIPTORS_HELD.get(kind, 0))

    async def publish(self, job_id: int, data: bytes, expected_offset: int | None = None) -> int:
        """Appends to a push job's log; returns its size.

        With `expected_offset`, a call is idempotent: a retry of one already applied (the
        same bytes at the same offset) appends nothing, any other mismatch is refused.
        """
        job = self.get(job_id)
        if job.record.spec.kind is not SourceKind.PUSH:
            raise InvalidRequest(f"job {job_id} is not a push job; only push jobs take bytes")
        if job.state.terminal:
            raise InvalidRequest(
                f"job {job_id} has ended ({job.state.value}); it takes no more bytes"
            )
        # Through the job's fetcher, which stores the bytes (in cluster mode, Redis first).
        fetcher = self._fetchers.get(job_id)
        if fetcher is None:
            # A node restarted just now takes its push jobs back (once their old lease has
            # expired): its publishers' retries wait for it, or are told to try again.
            await self._placement.wait_to_fetch(job)
            fetcher = self._fetchers.get(job_id)
        if fetcher is None:
            raise InvalidRequest(
                f"job {job_id} takes bytes on the daemon that attached it"
                f"{f' ({job.home_node})' if job.home_node else ''}, not here"
            )
        # What it has taken, stored or (in cluster mode) on its way to Redis: a retry while
        # the first is on its way is recognised, never appended twice.
        size = fetcher.stored
        if expected_offset is not None and expected_offset != size:
            if (
                expected_offset + len(data) <= size
                and fetcher.read(expected_offset, len(data)) == data
            ):
                await fetcher.flushed()
                return size
            raise OffsetMismatch(
                f"job {job_id}'s log is {size} bytes long, not {expected_offset}: "
                "publish at the current size",
                size,
            )
        try:
            fetcher.append(data)
        except StorageFull as error:
            self.event(job, f"disk full at offset {size}: a publish was refused ({error})")
            raise
        await fetcher.flushed()
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
        """Cancels jobs and returns once those stopping here have ended (local ones may take
        the grace); those whose cancel was asked of another system (SkyPilot) are returned
        as they are, still ending, with the reason "cancel requested".

        Named jobs that are unknown or already ended are reported, not an error: the others
        are cancelled all the same. A job not ended in time is returned still ending too.
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
        awaited: list[Job] = []
        for job in targets:
            backend = self._backend_of(job)
            if self._placement.cancel_elsewhere(job):
                cancelling = Cancelling.ENDING  # its fetcher, elsewhere, reports the end
            elif backend is None:
                cancelling = Cancelling.END_NOW
            else:
                cancelling = backend.cancel(job)
            if cancelling is Cancelling.END_NOW:
                self.end_now(job, "cancelled")
            elif cancelling is Cancelling.ENDING:
                awaited.append(job)  # its fetch reports the end
        # Not an error when it takes longer (an upstream that does not let go): the job is
        # reported still ending, and ends on its own.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(self._sealed(job) for job in awaited)),
                self._config.cancel_grace + _CANCEL_MARGIN,
            )
        for job in targets:
            if not job.state.terminal:
                job.record.reason = "cancel requested"
                self.save_record(job)
        result.cancelled = targets
        return result

    def remove(self, job_ids: list[int], *, ended_before: float | None) -> RemoveResult:
        """Deletes ended jobs: their records, events, log and run directory."""
        if not self._placement.allows_removal():
            raise InvalidRequest(
                "jobs are not removed in cluster mode yet: Redis keeps the last "
                "--redis-retention bytes of each log"
            )
        doomed, result = removal.choose(self._jobs, job_ids, ended_before)
        removal.delete(doomed, self._jobs, self._store, self._config.paths, result)
        return result

    def remove_expired(self, now: float) -> RemoveResult:
        """Applies the retention policy once."""
        config = self._config
        if not self._placement.allows_removal():
            return RemoveResult()
        doomed = removal.expired(
            self._jobs.values(),
            now,
            config.retention_seconds,
            config.max_ended_jobs,
            config.retain_log_bytes,
        )
        result = removal.RemoveResult()
        removal.delete(doomed.jobs, self._jobs, self._store, config.paths, result)
        if result.removed:
            self.counts.retention_removed_jobs += len(result.removed)
            self.counts.retention_removed_bytes += result.bytes_freed
            logger.info("retention: %s", removal.summary(doomed, config))
        return result

    def _keep_logs_within_budget(self) -> None:
        """--retain-logs as jobs end (ended logs grow only then): a disk filling with logs
        would not wait for the hourly pass. At most one pass a second, whatever the rate."""
        if self._config.retain_log_bytes is None or self._budget_pass is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test of the manager alone): now
            self._remove_expired_now()
            return

        def apply() -> None:
            self._budget_pass = None
            self._remove_expired_now()

        self._budget_pass = loop.call_later(_BUDGET_PASS_DELAY, apply)

    async def _apply_retention(self) -> None:
        while True:
            try:
                self.remove_expired(time.time())
            except Exception:  # keep the daemon and try again at the next round
                logger.exception("applying the retention policy failed")
            await asyncio.sleep(removal.RETENTION_INTERVAL)

    @staticmethod
    async def _sealed(job: Job) -> None:
        while not job.sealed:
            await job.changed.wait()

    # -- cluster mode (cluster/node.py) ---------------------------------------------------------
    def adopt_remote(self, record: JobRecord) -> Job:
        """A job another daemon created: recorded here, its log filled from the cluster."""
        self._store.insert(record)
        job = self._jobs.get(record.id)
        if job is None:
            if not self._claim_log(record):
                return self._jobs[record.id]
            job = self._new_job(record)
        job.mirror = True
        return job

    def cluster_view(self) -> ClusterView | None:
        return self._placement.view()

    async def watch(self, job: Job, *, catch_up: bool = False) -> None:
        """A subscriber starts reading the job: a mirrored job's bytes are read from the
        cluster now (with `catch_up`, until this daemon has what the cluster had)."""
        await self._placement.watch(job, catch_up=catch_up)

    def stop_fetching(self, job: Job) -> None:
        """Stops the job's fetch without ending the job (another daemon fetches it now)."""
        self._fetchers.pop(job.id, None)
        task = self._tasks.pop(job.id, None)
        if task is not None:
            task.cancel()

    def fetching(self, job: Job) -> bool:
        return job.id in self._tasks

    def notice(self, job: Job, message: str) -> None:
        """An event for this daemon's followers only (the cluster's state, as seen here)."""
        job.events.append(SourceEvent(job.log_size, message, time.time()))
        job.changed.notify()

    def seal_remote(self, job: Job) -> None:
        """A mirrored job's last byte and its end arrived: it ends here as it ended there."""
        job.changed.notify()
        self._seal(job)

    # -- FetchOwner --------------------------------------------------------------------------
    def appended(self, job: Job) -> None:
        if job.state is JobState.PENDING:
            # A backend's job (SkyPilot) runs once its log flows.
            self.mark_running(job)
        job.changed.notify()

    def save(self, job: Job) -> None:
        self._store.save(job.record)
        self._placement.saved(job)

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
        logger.info("job %d: %s", job.id, message)
        job.changed.notify()
        try:
            self._store.add_event(job.id, event)
        except StorageFull as error:
            # Followers have it; only a restarted daemon will not show it again.
            logger.warning("job %d: event not stored: %s", job.id, error)

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
        path = self._config.paths.job_log(record.id)
        try:
            fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError as error:
            if isinstance(error, FileExistsError) and path.is_symlink():
                reason = (
                    f"refusing {shown(path)}: it is a symbolic link, not a file tailhub made; "
                    "move it aside"
                )
            elif isinstance(error, FileExistsError):
                reason = (
                    f"refusing {shown(path)}: it already exists and is not this job's log "
                    "(another database's, or planted); move it aside"
                )
            else:
                reason = f"cannot create its log {shown(path)}: {error.strerror}"
                reason += out_of_descriptors(error)
            record.state, record.reason, record.sealed = JobState.FAILED, reason, True
            record.ended_at = time.time()
            record.source_state = {LOG_UNCLAIMED: True}
            self.save_record(self._new_job(record))
            if is_disk_full(error):
                raise StorageFull(f"job {record.id} failed: {reason}") from None
            logger.warning("job %d: %s", record.id, reason)
            return False
        os.close(fd)
        return True

    def save_record(self, job: Job) -> None:
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
        task = self._tasks.get(job.id)
        if task is not None:
            task.cancel()
        self._seal(job)

    def mark_running(self, job: Job) -> None:
        record = job.record
        record.state = JobState.RUNNING
        record.started_at = time.time()
        self.save_record(job)
        job.changed.notify()

    def fail_start(self, job: Job, error: Exception | str) -> None:
        logger.warning("job %d cannot start: %s", job.id, error)
        if not job.state.terminal:
            if isinstance(error, str):  # the backend's own words (SkyPilot's message)
                self._end(job, JobState.FAILED, None, error)
            else:
                self._end(job, JobState.FAILED, None, start_failure(error))
        self._seal(job)

    def start_fetcher(self, job: Job, *, finishing: bool) -> None:
        source = make_source(job.id, job.record.spec, self._environment)
        fetcher = self._placement.make_fetcher(job, source, self, self._config, self.counts)
        if finishing:
            fetcher.request_finish()
        self._fetchers[job.id] = fetcher
        self._tasks[job.id] = self._supervised.spawn(
            self._fetch(job, fetcher),
            name=f"fetch-{job.id}",
            on_crash=lambda error: self._conclude(job, Outcome(1, f"fetching failed: {error}")),
        )

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
        self._conclude(job, outcome)

    def _conclude(self, job: Job, outcome: Outcome | None) -> None:
        """After the fetch: records how the job ended, seals it and tells its backend."""
        self._fetchers.pop(job.id, None)
        self._tasks.pop(job.id, None)
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
        self.save_record(job)

    def _seal(self, job: Job) -> None:
        self._report_dropped_events(job, final=True)
        job.record.sealed = True
        job.changed.notify()
        job.release_log_if_idle()
        self.save_record(job)
        self._keep_ended_within_cap()
        self._keep_logs_within_budget()

    def _keep_ended_within_cap(self) -> None:
        """--max-ended-jobs as jobs end, not only at the hourly pass: at hundreds of launches
        a minute, an hour's ended jobs (records, specs, signals, paths: 3-10 KB each) were
        the daemon's memory growing without bound in sight (issue 16, item 20). A pass sorts
        every job: it runs once per `_CAP_SLACK` jobs ended past the cap."""
        cap = self._config.max_ended_jobs
        if cap is None or len(self._jobs) <= cap:
            return
        self._ended_since_cap_pass += 1
        if self._ended_since_cap_pass >= min(_CAP_SLACK, max(cap // 10, 1)):
            self._ended_since_cap_pass = 0
            try:  # soon, not under the feet of whoever is sealing a job now
                asyncio.get_running_loop().call_soon(self._remove_expired_now)
            except RuntimeError:  # no loop (a test of the manager alone): now
                self._remove_expired_now()

    def _remove_expired_now(self) -> None:
        try:
            self.remove_expired(time.time())
        except Exception:  # the hourly pass tries again
            logger.exception("applying the retention policy failed")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._config.heartbeat_interval)
            for job_id in [*self._event_limiters]:
                if job_id in self._jobs:  # (a removed job has nothing left to report)
                    self._report_dropped_events(self._jobs[job_id], final=False)
            for job_id in list(self._unsaved):
                unsaved = self._jobs.get(job_id)
                if unsaved is None:  # removed meanwhile
                    self._unsaved.discard(job_id)
                else:
                    self.save_record(unsaved)
            for backend in self._backends.values():  # a job may wait for disk space
                backend.tick()
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
        if not path.is_file():
            # A FIFO or device would block the reader; only regular files are followed.
            raise InvalidRequest(f"{spec.path} is not a regular file")
        if not os.access(path, os.R_OK):
            raise InvalidRequest(f"cannot read {spec.path}: permission denied")
    elif isinstance(spec, CommandSpec):
        if not spec.argv or not spec.argv[0]:
            raise InvalidRequest("command is empty")
    elif isinstance(spec, SkyPilotSpec):
        if spec.managed_job_id is None or spec.task_yaml:
            raise InvalidRequest("attach takes a SkyPilot managed job by its id")
    elif not isinstance(spec, PushSpec):
        raise InvalidRequest("attach takes a file, command, push or skypilot source")
