"""The `skypilot` backend: tasks submitted as SkyPilot managed jobs with the `sky` CLI.

`sky jobs launch -d -y` submits (a supervised task, bounded in time, so a slow submission
blocks nothing); the managed job id it prints is recorded, and from then on the job's one
upstream is the `skypilot` source (`sky jobs logs`). Cancel runs `sky jobs cancel -y`, once,
and does not wait for it: SkyPilot's cancel is asynchronous (the cluster is torn down first).
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
from tailhub.daemon.sky import managed_job_ids, message_of
from tailhub.daemon.sources import SourceEnvironment
from tailhub.daemon.statedir import ensure_private_dir, write_state_file
from tailhub.daemon.store import JobStore

# Resume state: `sky jobs launch` was started; whether SkyPilot took the job is unknown
# until it prints the managed job id.
_SUBMITTING = "submitting"
# Resume state: `sky jobs cancel` ran (it is run once).
_CANCEL_SENT = "cancel_sent"
_CANCEL_TIMEOUT = 120.0

logger = logging.getLogger(__name__)


class SkyPilotBackend:
    def __init__(self, host: BackendHost, environment: SourceEnvironment, store: JobStore):
        self._host = host
        self._config = environment.config
        self._sky = environment.sky
        self._store = store
        # Jobs a full disk kept from being submitted, by id: retried on each tick.
        self._waiting_for_space: dict[int, Job] = {}

    def check(self, spec: SourceSpec) -> None:
        assert isinstance(spec, SkyPilotSpec)
        if not spec.task_yaml.strip():
            raise InvalidRequest("the skypilot backend needs the task file's text (task_yaml)")
        if spec.workdir and not Path(spec.workdir).is_dir():
            raise InvalidRequest(f"workdir {spec.workdir} is not a directory")

    def submit(self, job: Job) -> None:
        # "submitting" must be on disk before `sky` runs: a daemon restarted without it
        # would submit the job a second time. A full disk keeps the job waiting instead.
        job.record.source_state[_SUBMITTING] = True
        try:
            self._store.save(job.record)
        except Exception as error:  # whatever it is, it concerns this job only
            job.record.source_state.pop(_SUBMITTING, None)
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
        self._host.spawn(job, self._submit(job), name=f"sky-launch-{job.id}")

    def adopt(self, job: Job) -> None:
        state = job.record.source_state
        if MANAGED_JOB_ID in state:
            self._host.start_fetcher(job, finishing=job.state.terminal)
        elif state.get(_SUBMITTING):
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
        # Still submitting: cancelled as soon as SkyPilot gives its id.
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

    async def _submit(self, job: Job) -> None:
        spec = job.record.spec
        assert isinstance(spec, SkyPilotSpec)
        run_dir = self._config.paths.run_dir(job.id)
        ensure_private_dir(run_dir)
        task_path = run_dir / "task.yaml"
        write_state_file(task_path, spec.task_yaml)
        argv = self._sky.launch_argv(str(task_path), spec.name or job.record.name, spec.envs)
        environment = self._sky.launch_environment(spec.environment, spec.envs)
        timeout = self._config.sky_submit_timeout
        try:
            result = await self._sky.run(argv, environment, cwd=spec.workdir, timeout=timeout)
        except OSError as error:
            self._host.fail_start(job, f"cannot run {self._sky.path}: {error.strerror}")
            return
        if result.exit_code is None:
            self._host.fail_start(job, f"`sky jobs launch` took longer than {timeout:.0f}s")
            return
        ids = managed_job_ids(result.stdout) if result.exit_code == 0 else []
        if not ids:
            message = message_of(result) or f"sky jobs launch exited with {result.exit_code}"
            self._host.fail_start(job, message)
            return
        state = job.record.source_state
        state[MANAGED_JOB_ID] = ids[-1]
        state.pop(_SUBMITTING, None)
        self._host.save_or_defer(job)
        self._host.record_event(job, f"submitted as SkyPilot managed job {ids[-1]}")
        if job.record.cancel_requested:
            self._send_cancel(job, ids[-1])
        self._host.start_fetcher(job, finishing=False)

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
