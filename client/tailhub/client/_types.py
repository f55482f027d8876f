"""What the client library hands out: plain values, not protobuf messages."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tailhub.v1 import tailhub_pb2 as pb


class JobState(enum.Enum):
    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


_STATES = {
    pb.JOB_STATE_PENDING: JobState.PENDING,
    pb.JOB_STATE_RUNNING: JobState.RUNNING,
    pb.JOB_STATE_SUCCEEDED: JobState.SUCCEEDED,
    pb.JOB_STATE_FAILED: JobState.FAILED,
    pb.JOB_STATE_CANCELLED: JobState.CANCELLED,
}
_SOURCES = {
    pb.SOURCE_KIND_LOCAL: "local",
    pb.SOURCE_KIND_FILE: "file",
    pb.SOURCE_KIND_COMMAND: "command",
    pb.SOURCE_KIND_PUSH: "push",
    pb.SOURCE_KIND_SKYPILOT: "skypilot",
}


def state_of(value: int) -> JobState:
    return _STATES.get(pb.JobState.ValueType(value), JobState.UNKNOWN)


@dataclass(frozen=True)
class JobInfo:
    id: int
    name: str
    state: JobState
    exit_code: int | None
    reason: str
    source: str
    source_description: str
    log_size: int
    sealed: bool
    upstream_connections: int
    subscribers: int
    bytes_served: int
    submitted_at: float
    started_at: float
    ended_at: float
    # Upstream connections open now (0 or 1); `upstream_connections` counts every one opened.
    upstream_connections_open: int = 0
    # Where a launched job runs ("local", "skypilot"); empty for attached jobs.
    backend: str = ""
    # The job's id in its backend (SkyPilot's managed job id), once known.
    external_id: str = ""
    # Cluster mode: the node fetching the job now ("" if none), and the node a local or
    # file job is pinned to.
    lease_holder: str = ""
    home_node: str = ""

    @classmethod
    def from_pb(cls, job: pb.Job) -> JobInfo:
        return cls(
            id=job.id,
            name=job.name,
            state=state_of(job.state),
            exit_code=job.exit_code if job.HasField("exit_code") else None,
            reason=job.reason,
            source=_SOURCES.get(job.source_kind, "unknown"),
            source_description=job.source_description,
            log_size=job.log_size,
            sealed=job.sealed,
            upstream_connections=job.upstream_connections,
            subscribers=job.subscribers,
            bytes_served=job.bytes_served,
            submitted_at=job.submitted_at,
            started_at=job.started_at,
            ended_at=job.ended_at,
            upstream_connections_open=job.upstream_connections_open,
            backend=job.backend,
            external_id=job.external_id,
            lease_holder=job.lease_holder,
            home_node=job.home_node,
        )


@dataclass(frozen=True)
class ClusterInfo:
    """Cluster mode: the cluster as the daemon that answered sees it."""

    node_name: str
    redis: str
    connected: bool
    leases_held: int
    stale_appends_refused: int
    nodes: int


@dataclass(frozen=True)
class DaemonStatus:
    pid: int
    version: str
    home: str
    started_at: float
    jobs: int
    running_jobs: int
    subscribers: int
    upstream_connections: int
    bytes_served: int
    upstream_connections_open: int = 0
    # Where a launched job runs ("local", "skypilot"); empty for attached jobs.
    backend: str = ""
    # The job's id in its backend (SkyPilot's managed job id), once known.
    external_id: str = ""
    # Set in cluster mode only.
    cluster: ClusterInfo | None = None

    @classmethod
    def from_pb(cls, status: pb.GetDaemonStatusResponse) -> DaemonStatus:
        return cls(
            pid=status.pid,
            version=status.version,
            home=status.home,
            started_at=status.started_at,
            jobs=status.jobs,
            running_jobs=status.running_jobs,
            subscribers=status.subscribers,
            upstream_connections=status.upstream_connections,
            bytes_served=status.bytes_served,
            upstream_connections_open=status.upstream_connections_open,
            cluster=_cluster_info(status),
        )


def _cluster_info(status: pb.GetDaemonStatusResponse) -> ClusterInfo | None:
    if not status.HasField("cluster"):
        return None
    view = status.cluster
    return ClusterInfo(
        node_name=view.node_name,
        redis=view.redis,
        connected=view.connected,
        leases_held=view.leases_held,
        stale_appends_refused=view.stale_appends_refused,
        nodes=view.nodes,
    )


@dataclass(frozen=True)
class JobPage:
    """One page of `ListJobs`, newest first."""

    jobs: list[JobInfo]
    # Pass to the next call for the following page; empty after the last one.
    next_page_token: str
    total_jobs: int


@dataclass(frozen=True)
class CancelResult:
    cancelled: list[JobInfo]
    # Named ids the daemon does not have.
    unknown_job_ids: list[int]
    # Named jobs that had ended before (left as they were).
    already_ended: list[JobInfo]


@dataclass(frozen=True)
class RemoveResult:
    removed_job_ids: list[int]
    unknown_job_ids: list[int]
    # Named jobs that have not ended (cancel them first).
    not_ended_job_ids: list[int]
    bytes_freed: int


@dataclass(frozen=True)
class LogChunk:
    offset: int
    data: bytes


@dataclass(frozen=True)
class LogEvent:
    """Something that happened upstream (a truncated or rotated file, a reconnect)."""

    offset: int
    message: str


@dataclass(frozen=True)
class LogHeartbeat:
    """Sent while a followed log is idle: the log's size and the job's state."""

    log_size: int
    state: JobState


@dataclass(frozen=True)
class LogEnd:
    """The last item of a stream: how the job stands at the end of what was sent."""

    state: JobState
    exit_code: int | None
    reason: str
    log_size: int
    finished: bool


@dataclass(frozen=True)
class LogTimeMark:
    """The bytes from `offset` on, up to the next mark, reached the daemon at `time` (Unix
    seconds). Sent before the chunk holding `offset`, when asked for with `timestamps`."""

    offset: int
    time: float


LogItem = LogChunk | LogEvent | LogHeartbeat | LogEnd | LogTimeMark
