"""What the client library hands out: plain values, not protobuf messages.

The job's state and the items of a follow that the daemon has too are the daemon's own
(tailhub.daemon.domain and .items, both light): one definition on both sides of the wire.
A chunk (its bytes, where the daemon has a range of its log) and an upstream event (without
the time the daemon keeps) are the client's.
"""

from __future__ import annotations

from dataclasses import dataclass

from tailhub.daemon.domain import JobState
from tailhub.daemon.items import Ended as LogEnd
from tailhub.daemon.items import Heartbeat as LogHeartbeat
from tailhub.daemon.items import TimeMark as LogTimeMark
from tailhub.v1 import tailhub_pb2 as pb

__all__ = [
    "CancelResult",
    "ClusterInfo",
    "DaemonStatus",
    "JobEvent",
    "JobInfo",
    "JobPage",
    "JobState",
    "ListenerInfo",
    "LogChunk",
    "LogEnd",
    "LogEvent",
    "LogHeartbeat",
    "LogItem",
    "LogTimeMark",
    "RemoveResult",
    "state_of",
]


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
class ListenerInfo:
    """One TCP listener of the daemon (`tailhubd --listen`, `--http-listen`)."""

    address: str
    # "plaintext", "tls" or "mutual-tls" ("" from a daemon that did not say).
    security: str
    # The --tls-cert file the daemon read, and when its certificate stops being valid.
    certificate_path: str = ""
    certificate_not_after: float | None = None
    # What it serves: "grpc" (this API: the only kind to connect a Client to) or "web" (the
    # web view). A daemon that did not say listed only gRPC listeners.
    kind: str = "grpc"


_SECURITY = {
    pb.LISTENER_SECURITY_PLAINTEXT: "plaintext",
    pb.LISTENER_SECURITY_TLS: "tls",
    pb.LISTENER_SECURITY_MUTUAL_TLS: "mutual-tls",
}


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
    # Set in cluster mode only.
    cluster: ClusterInfo | None = None
    # The protobuf package the daemon serves ("tailhub.v1"); "" from daemons before 0.2.0.
    api_version: str = ""
    listeners: tuple[ListenerInfo, ...] = ()
    metrics_address: str = ""
    # 0: no limit (or no listeners, for the stream limits).
    max_running_jobs: int = 0
    subscriber_budget_bytes: int = 0
    max_streams: int = 0
    max_streams_per_token: int = 0
    # None where the daemon could not tell (or is older than 0.2.0).
    open_files: int | None = None
    max_open_files: int | None = None
    log_disk_free_bytes: int | None = None
    log_disk_total_bytes: int | None = None
    # Ended jobs the retention policy removed since the daemon started, and their logs' bytes.
    retention_removed_jobs: int = 0
    retention_removed_bytes: int = 0
    # Jobs not ended one token may hold; 0: no listeners.
    max_jobs_per_token: int = 0

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
            api_version=status.api_version,
            listeners=tuple(_listener_info(listener) for listener in status.listeners),
            metrics_address=status.metrics_address,
            max_running_jobs=status.max_running_jobs,
            subscriber_budget_bytes=status.subscriber_budget_bytes,
            max_streams=status.max_streams,
            max_streams_per_token=status.max_streams_per_token,
            open_files=_optional(status, "open_files"),
            max_open_files=_optional(status, "max_open_files"),
            log_disk_free_bytes=_optional(status, "log_disk_free_bytes"),
            log_disk_total_bytes=_optional(status, "log_disk_total_bytes"),
            retention_removed_jobs=status.retention_removed_jobs,
            retention_removed_bytes=status.retention_removed_bytes,
            max_jobs_per_token=status.max_jobs_per_token,
        )


def _optional(status: pb.GetDaemonStatusResponse, name: str) -> int | None:
    return int(getattr(status, name)) if status.HasField(name) else None  # type: ignore[arg-type]


def _listener_info(listener: pb.ListenerStatus) -> ListenerInfo:
    return ListenerInfo(
        address=listener.address,
        security=_SECURITY.get(listener.security, ""),
        certificate_path=listener.certificate_path,
        certificate_not_after=(
            listener.certificate_not_after if listener.HasField("certificate_not_after") else None
        ),
        kind=listener.kind or "grpc",
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


LogItem = LogChunk | LogEvent | LogHeartbeat | LogEnd | LogTimeMark


@dataclass(frozen=True)
class JobEvent:
    """One of a job's kept source events (GetJob): where in its log, when, and what."""

    offset: int
    time: float
    message: str
