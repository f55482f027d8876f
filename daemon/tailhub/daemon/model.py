"""The domain: jobs, their states and sources, as plain values (no protobuf here)."""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass, field
from typing import Any


class JobState(enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def from_exit_code(cls, exit_code: int) -> JobState:
        return cls.SUCCEEDED if exit_code == 0 else cls.FAILED


class SourceKind(enum.Enum):
    LOCAL = "local"
    FILE = "file"
    COMMAND = "command"
    PUSH = "push"


@dataclass(frozen=True)
class FileSpec:
    path: str
    kind: SourceKind = field(default=SourceKind.FILE, init=False)

    def describe(self) -> str:
        return self.path


@dataclass(frozen=True)
class CommandSpec:
    argv: tuple[str, ...]
    shell: bool = False
    # Empty: the daemon's default set.
    transport_exit_codes: frozenset[int] = frozenset()
    # Report stderr lines as events instead of merging them into the log (ssh's diagnostics).
    stderr_events: bool = False
    kind: SourceKind = field(default=SourceKind.COMMAND, init=False)

    def describe(self) -> str:
        return self.argv[0] if self.shell else shlex.join(self.argv)


@dataclass(frozen=True)
class PushSpec:
    kind: SourceKind = field(default=SourceKind.PUSH, init=False)

    def describe(self) -> str:
        return "push"


@dataclass(frozen=True)
class LocalSpec:
    """A task for the local runner."""

    run: str
    setup: str = ""
    workdir: str = ""
    envs: tuple[tuple[str, str], ...] = ()
    # The launching client's environment, the base `envs` are added to; empty: a minimal one.
    environment: tuple[tuple[str, str], ...] = ()
    kind: SourceKind = field(default=SourceKind.LOCAL, init=False)

    def describe(self) -> str:
        first = self.run.strip().splitlines()[0] if self.run.strip() else ""
        return first[:80]


SourceSpec = FileSpec | CommandSpec | PushSpec | LocalSpec


def spec_to_json(spec: SourceSpec) -> dict[str, Any]:
    if isinstance(spec, FileSpec):
        return {"kind": "file", "path": spec.path}
    if isinstance(spec, CommandSpec):
        return {
            "kind": "command",
            "argv": list(spec.argv),
            "shell": spec.shell,
            "transport_exit_codes": sorted(spec.transport_exit_codes),
            "stderr_events": spec.stderr_events,
        }
    if isinstance(spec, PushSpec):
        return {"kind": "push"}
    return {
        "kind": "local",
        "run": spec.run,
        "setup": spec.setup,
        "workdir": spec.workdir,
        "envs": [list(pair) for pair in spec.envs],
        "environment": [list(pair) for pair in spec.environment],
    }


def spec_from_json(data: dict[str, Any]) -> SourceSpec:
    kind = data["kind"]
    if kind == "file":
        return FileSpec(path=data["path"])
    if kind == "command":
        return CommandSpec(
            argv=tuple(data["argv"]),
            shell=bool(data["shell"]),
            transport_exit_codes=frozenset(data["transport_exit_codes"]),
            stderr_events=bool(data.get("stderr_events", False)),
        )
    if kind == "push":
        return PushSpec()
    if kind == "local":
        return LocalSpec(
            run=data["run"],
            setup=data["setup"],
            workdir=data["workdir"],
            envs=tuple((k, v) for k, v in data["envs"]),
            # Absent in jobs recorded before launches carried their client's environment.
            environment=tuple((k, v) for k, v in data.get("environment", [])),
        )
    raise ValueError(f"unknown source kind {kind!r}")


@dataclass
class JobRecord:
    """What the database keeps of a job. Mutated only by the job's owner, then saved."""

    id: int
    name: str
    spec: SourceSpec
    state: JobState = JobState.PENDING
    exit_code: int | None = None
    reason: str = ""
    submitted_at: float = 0.0
    started_at: float = 0.0
    ended_at: float = 0.0
    upstream_connections: int = 0
    sealed: bool = False
    # Free-form per-source resume state (file inode and position, local pid), saved as JSON.
    source_state: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False


@dataclass(frozen=True)
class SourceEvent:
    """Something that happened upstream, placed at a log offset."""

    offset: int
    message: str
    time: float


class JobError(Exception):
    """Base of the errors the service reports to clients."""


class JobNotFound(JobError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class InvalidRequest(JobError):
    """The request cannot be carried out as asked (wrong source kind, job already ended...)."""


class StorageFull(JobError):
    """The disk holding the state directory is full: nothing was stored, retry when freed."""


class OffsetMismatch(JobError):
    """A Publish expected the log to end at another offset than it does."""

    def __init__(self, message: str, log_size: int) -> None:
        super().__init__(message)
        self.log_size = log_size
