"""The `skypilot` backend: tasks submitted as SkyPilot managed jobs with the `sky` CLI.

Submitting writes the task file and starts the job's fetch: its first upstream is the
`sky jobs launch -y` (no -d) that submits the job and streams its log, one `sky` per job
(sources/skypilot.py). Cancel runs `sky jobs cancel -y ID`, once, and does not wait for it:
SkyPilot's cancel is asynchronous (the cluster is torn down first). SkyPilot prints the id
only after the log; a cancel before that finds it with one `sky jobs queue -o json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from tailhub.daemon.backends.base import BackendHost, Cancelling
from tailhub.daemon.domain import MANAGED_JOB_ID, JobState, SkyPilotSpec, SourceSpec
from tailhub.daemon.errors import InvalidRequest, StorageFull
from tailhub.daemon.faults import is_disk_full
from tailhub.daemon.live_job import Job
from tailhub.daemon.sky import (
    LOG_STARTED_AT,
    SKY_NAME,
    SUBMITTING,
    TASK_PATH,
    find_launched,
    message_of,
)
from tailhub.daemon.sources import SourceEnvironment
from tailhub.daemon.statedir import ensure_private_dir, write_state_file
from tailhub.daemon.store import JobStore

# Resume state: `sky jobs cancel` ran (it is run once).
_CANCEL_SENT = "cancel_sent"
_CANCEL_TIMEOUT = 120.0

logger = logging.getLogger(__name__)


class SkyPilotBackend:
    def __init__(self, host: BackendHost, environment: SourceEnvironment, store: JobStore):
        self._host = host
        self._config = environment.config
        self._sky = environment.sky
        self._sky.submit_timeout = self._config.sky_submit_timeout
        self._store = store
        # Jobs a full disk kept from being submitted, by id: retried on each tick.
        self._waiting_for_space: dict[int, Job] = {}
        # Jobs cancelled before their managed job id was known, by id: it is being found.
        self._finding: set[int] = set()

    def check(self, spec: SourceSpec) -> None:
        assert isinstance(spec, SkyPilotSpec)
        if not spec.task_yaml.strip():
            raise InvalidRequest("the skypilot backend needs the task file's text (task_yaml)")
        if spec.workdir and not Path(spec.workdir).is_dir():
            raise InvalidRequest(f"workdir {spec.workdir} is not a directory")

    def submit(self, job: Job) -> None:
        # "submitting" must be on disk before `sky` runs: a daemon restarted without it
        # would submit the job a second time. A full disk keeps the job waiting instead.
        spec = job.record.spec
        assert isinstance(spec, SkyPilotSpec)
        state = job.record.source_state
        task_path = self._config.paths.run_dir(job.id) / "task.yaml"
        state.update({SUBMITTING: True, TASK_PATH: str(task_path)})
        state[SKY_NAME] = spec.name or job.record.name
        try:
            ensure_private_dir(task_path.parent)
            write_state_file(task_path, spec.task_yaml)
            self._store.save(job.record)
        except Exception as error:  # whatever it is, it concerns this job only
            for key in (SUBMITTING, TASK_PATH, SKY_NAME):
                state.pop(key, None)
            if isinstance(error, StorageFull) or is_disk_full(error):
                if job.id not in self._waiting_for_space:
                    self._waiting_for_space[job.id] = job
                    self._host.record_event(
                        job, f"disk full: the job waits to be submitted ({error})"
                    )
                return
            self._host.fail_start(job, error)
            return
        self._waiting_for_space.pop(job.id, None)
        self._host.start_fetcher(job, finishing=False)

    def adopt(self, job: Job) -> None:
        state = job.record.source_state
        if MANAGED_JOB_ID in state or state.get(LOG_STARTED_AT):
            # (Without the id, the fetch finds it: SkyPilot took the job.)
            self._host.start_fetcher(job, finishing=job.state.terminal)
        elif state.get(SUBMITTING):
            self._host.fail_start(
                job,
                "the daemon stopped while `sky jobs launch` ran: whether SkyPilot took the "
                "job is unknown (see `sky jobs queue`)",
            )
        else:
            self.submit(job)

    def cancel(self, job: Job) -> Cancelling:
        if self._waiting_for_space.pop(job.id, None) is not None:
            return Cancelling.END_NOW  # never given to SkyPilot
        record = job.record
        record.cancel_requested = True
        self._host.save_or_defer(job)
        managed_id = record.source_state.get(MANAGED_JOB_ID)
        if isinstance(managed_id, int):
            self._send_cancel(job, managed_id)
        elif job.id not in self._finding:
            # Still submitting, or its id not printed yet: cancelled once SkyPilot took it.
            self._finding.add(job.id)
            self._host.spawn(job, self._find_and_cancel(job), name=f"sky-find-{job.id}")
        return Cancelling.REQUESTED

    def released(self, job: Job) -> None:
        pass

    def tick(self) -> None:
        """Submits the jobs a full disk kept waiting, oldest first, while it lets them."""
        for job in sorted(self._waiting_for_space.values(), key=lambda waiting: waiting.id):
            if job.state is not JobState.PENDING:
                self._waiting_for_space.pop(job.id, None)
                continue
            self.submit(job)
            if job.id in self._waiting_for_space:
                return  # still full

    async def _find_and_cancel(self, job: Job) -> None:
        """Cancels a job whose managed job id was not known at the cancel: once SkyPilot took
        it, its id is the launch's (if printed by then) or one `sky jobs queue` away."""
        state = job.record.source_state
        try:
            while not (job.sealed or MANAGED_JOB_ID in state or state.get(LOG_STARTED_AT)):
                await job.changed.wait()
            if job.sealed:
                return
            managed_id = state.get(MANAGED_JOB_ID)
            if not isinstance(managed_id, int):
                spec = job.record.spec
                assert isinstance(spec, SkyPilotSpec)
                environment = self._sky.environment(spec.environment)
                try:
                    managed_id = await find_launched(self._sky, environment, state)
                except (LookupError, OSError) as error:
                    self._host.record_event(job, f"cannot cancel in SkyPilot: {error}")
                    return
            self._send_cancel(job, managed_id)
        finally:
            self._finding.discard(job.id)

    def _send_cancel(self, job: Job, managed_id: int) -> None:
        state = job.record.source_state
        if state.get(_CANCEL_SENT):
            return
        state[_CANCEL_SENT] = True
        self._host.save_or_defer(job)
        spec = job.record.spec
        assert isinstance(spec, SkyPilotSpec)

        async def cancel() -> None:
            try:
                result = await self._sky.run(
                    self._sky.cancel_argv(managed_id),
                    self._sky.environment(spec.environment),
                    timeout=_CANCEL_TIMEOUT,
                )
            except OSError as error:
                self._host.record_event(job, f"cannot run {self._sky.path}: {error.strerror}")
                return
            if result.exit_code != 0:
                self._host.record_event(job, f"sky jobs cancel failed: {message_of(result)}")
                return
            # SkyPilot took the cancel; its `jobs logs` reports CANCELLED once the job's
            # cluster is down. A job still not ended after the grace is ended here.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_until_sealed(job), self._config.cancel_grace)
            if not job.sealed:
                self._host.end_now(job, f"cancelled with `sky jobs cancel -y {managed_id}`")

        self._host.spawn(job, cancel(), name=f"sky-cancel-{job.id}")


async def _until_sealed(job: Job) -> None:
    while not job.sealed:
        await job.changed.wait()
