"""Launch keys: a LaunchJob called again with its key gets the job the first call created.

A client that did not get its answer (its deadline passed while the daemon was busy, the
daemon restarted) cannot know whether its job was created. It calls again with the same key
and gets that job back, never a second one. The key is scoped to its caller (a token's name,
or the owner on the Unix socket): another caller's same key is another launch, so no one can
probe or take over someone else's launch. A key is stored with its job's record (store.py,
the `launch_keys` table) and deleted with it: memory and disk stay bounded by the jobs.

A launch, once begun, runs to its end in a task of its own, even when its caller has gone
(gRPC cancels a call's handler when the client's deadline passes): a job is never left
half-made (recorded, never submitted), and a call again with the key, while the first is
still under way, waits for the first's outcome and answers it.

A key sent again with another task (`task_of`: its name, script or task file, and envs; not
the shell's environment or directory, which differ from one try to the next) is refused with
the job it launched: answering that job would leave its caller believing its own task ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from tailhub.daemon.domain import LAUNCH_KEY_PATTERN, LaunchKey, LocalSpec, SkyPilotSpec, SourceSpec
from tailhub.daemon.errors import InvalidRequest
from tailhub.daemon.live_job import Job

# A launch's scoped key, or None for a launch without one.
Key = LaunchKey | None


def launch_key(caller: str | None, key: str) -> LaunchKey | None:
    """The scoped key of a launch (None when it gave none); InvalidRequest for a key that is
    not 16-64 characters of A-Z a-z 0-9 _ -."""
    if not key:
        return None
    if LAUNCH_KEY_PATTERN.fullmatch(key) is None:
        raise InvalidRequest(
            "launch_key must be 16-64 characters of A-Z a-z 0-9 _ - "
            f"(got {len(key)} characters{'' if key.isascii() else ', not all ASCII'})"
        )
    return LaunchKey(caller or "", key)


# What a launch task ends with: its job, or the error that refused it.
_Outcome = Job | Exception
# What a launch asks to run (task_of).
Task = tuple[object, ...]


def task_of(name: str, spec: SourceSpec) -> Task:
    """What a launch asks to run, whoever sends it from whatever shell."""
    envs = tuple(tuple(pair) for pair in getattr(spec, "envs", ()))
    if isinstance(spec, LocalSpec):
        return ("local", name, spec.run, spec.setup, envs)
    if isinstance(spec, SkyPilotSpec):
        return ("skypilot", name, spec.task_yaml, spec.name, envs)
    return (spec.kind.value, name)


def _same_task(key: LaunchKey, task: Task, job_id: int | None, launched: Task) -> None:
    """InvalidRequest when the key's launch (`job_id`; None: under way) ran another task."""
    if task != launched:
        which = "is launching" if job_id is None else f"launched job {job_id},"
        raise InvalidRequest(
            f"launch key {key.key} {which} another task; give this launch a key of its own"
        )


class Spawn(Protocol):
    """Starts a task and owns it (tasks.TaskSet.spawn)."""

    def __call__(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]: ...


class LaunchKeys:
    """Runs each launch to its end, once per key. Not thread-safe: one event loop."""

    def __init__(
        self,
        launched_with: Callable[[LaunchKey], int | None],
        jobs: Mapping[int, Job],
        spawn: Spawn,
    ) -> None:
        # The id of the job a key is stored with (the database), if any; the jobs by id.
        self._launched_with = launched_with
        self._jobs = jobs
        # Owns each launch's task until it ends (the job manager's TaskSet: cancelled on close).
        self._spawn = spawn
        # The launches with a key under way, with what each asked to run.
        self._by_key: dict[LaunchKey, tuple[asyncio.Task[_Outcome], Task]] = {}

    async def once(self, key: Key, asked: Task, launch: Callable[[], Awaitable[Job]]) -> Job:
        """The job `key` was launched with (under way: once it is made), else `launch()`'s.
        `asked`: what this launch asks to run (task_of); InvalidRequest when the key's job
        runs something else."""
        if key is not None:
            under_way = self._by_key.get(key)
            if under_way is not None:
                _same_task(key, asked, None, under_way[1])
                return _answer(await asyncio.shield(under_way[0]))
            job_id = self._launched_with(key)
            if job_id is not None and job_id in self._jobs:
                record = self._jobs[job_id].record
                _same_task(key, asked, job_id, task_of(record.name, record.spec))
                return self._jobs[job_id]
        task: asyncio.Task[_Outcome] = self._spawn(_outcome(launch()), name="launch")
        if key is not None:
            self._by_key[key] = (task, asked)
            task.add_done_callback(lambda _: self._by_key.pop(key, None))
        return _answer(await asyncio.shield(task))


async def _outcome(launching: Awaitable[Job]) -> _Outcome:
    # An error is the answer, not a crash: returned, so that a task whose caller has gone
    # never leaves an exception unread (CancelledError still propagates).
    try:
        return await launching
    except Exception as error:
        return error


def _answer(outcome: _Outcome) -> Job:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
