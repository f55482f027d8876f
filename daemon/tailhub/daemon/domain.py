"""The domain: jobs, their states and sources, as plain values (no protobuf here)."""

from __future__ import annotations

import enum
import re
import shlex
from dataclasses import dataclass, field
from typing import Any


class JobState(enum.Enum):
    """A job's state: the daemon's, and the client library's (tailhub.client.JobState)."""

    # What a client shows for a state it does not know (a newer daemon's). No job is ever in
    # it: `read` refuses it from the database and from Redis.
    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def read(cls, text: str) -> JobState:
        """A job's state read back (database, Redis); ValueError for one no job is in."""
        state = cls(text)
        if state is cls.UNKNOWN:
            raise ValueError(f"{text!r} is not a job's state")
        return state

    @classmethod
    def from_exit_code(cls, exit_code: int) -> JobState:
        return cls.SUCCEEDED if exit_code == 0 else cls.FAILED


class SourceKind(enum.Enum):
    LOCAL = "local"
    FILE = "file"
    COMMAND = "command"
    PUSH = "push"
    SKYPILOT = "skypilot"


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

    @property
    def backend(self) -> str:
        return "local"

    def describe(self) -> str:
        first = self.run.strip().splitlines()[0] if self.run.strip() else ""
        return first[:80]


@dataclass(frozen=True)
class SkyPilotSpec:
    """A SkyPilot managed job: launched through tailhub (a task), or attached by its id."""

    # The task file's text; empty for a job attached by its managed job id.
    task_yaml: str = ""
    # Where `sky jobs launch` runs: the task file's directory (relative paths in it work).
    workdir: str = ""
    # `sky jobs launch -n NAME`; empty: the task's own name.
    name: str = ""
    envs: tuple[tuple[str, str], ...] = ()
    # The launching client's environment: `sky` needs its credentials and PATH.
    environment: tuple[tuple[str, str], ...] = ()
    # Known from the start for an attached job; a launched one records it once submitted.
    managed_job_id: int | None = None
    kind: SourceKind = field(default=SourceKind.SKYPILOT, init=False)

    @property
    def backend(self) -> str:
        # An attached managed job was launched elsewhere: no backend of ours runs it.
        return "skypilot" if self.task_yaml else ""

    def describe(self) -> str:
        if self.managed_job_id is not None and not self.task_yaml:
            return f"sky jobs logs {self.managed_job_id}"
        return f"sky jobs launch {self.name}".rstrip()


SourceSpec = FileSpec | CommandSpec | PushSpec | LocalSpec | SkyPilotSpec
# What a backend runs.
LaunchSpec = LocalSpec | SkyPilotSpec


def backend_of(spec: SourceSpec) -> str:
    """The backend that runs a job of this spec; empty for attached jobs."""
    return spec.backend if isinstance(spec, LocalSpec | SkyPilotSpec) else ""


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
    if isinstance(spec, SkyPilotSpec):
        return {
            "kind": "skypilot",
            "task_yaml": spec.task_yaml,
            "workdir": spec.workdir,
            "name": spec.name,
            "envs": [list(pair) for pair in spec.envs],
            "environment": [list(pair) for pair in spec.environment],
            "managed_job_id": spec.managed_job_id,
        }
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
    if kind == "skypilot":
        return SkyPilotSpec(
            task_yaml=data["task_yaml"],
            workdir=data["workdir"],
            name=data["name"],
            envs=tuple((k, v) for k, v in data["envs"]),
            environment=tuple((k, v) for k, v in data["environment"]),
            managed_job_id=data["managed_job_id"],
        )
    raise ValueError(f"unknown source kind {kind!r}")


# Resume state of a launched SkyPilot job: its managed job id, once `sky` printed it.
MANAGED_JOB_ID = "managed_job_id"


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

    @property
    def external_id(self) -> str:
        """The job's id in its backend (SkyPilot's managed job id) once known; else empty."""
        if isinstance(self.spec, SkyPilotSpec):
            known = self.spec.managed_job_id or self.source_state.get(MANAGED_JOB_ID)
            return "" if known is None else str(known)
        return ""


@dataclass(frozen=True)
class SourceEvent:
    """Something that happened upstream, placed at a log offset."""

    offset: int
    message: str
    time: float


# What a launch key may be (LaunchJob's launch_key): enough for 16 random bytes, hex or
# base64url, and no more.
LAUNCH_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(frozen=True)
class LaunchKey:
    """A launch's idempotency key and the caller it belongs to: a token's name, or "" for the
    owner (the Unix socket). Stored with the job it launched (launch_keys.py)."""

    caller: str
    key: str
