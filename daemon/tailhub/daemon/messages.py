"""Protobuf messages to domain values and back: every conversion the servicer (service.py)
makes, in one place. A request's values are checked on the way in (limits.py), so that
nothing unchecked reaches the core."""

from __future__ import annotations

import math

from tailhub.daemon import limits
from tailhub.daemon.credentials import without_credentials
from tailhub.daemon.domain import (
    CommandSpec,
    FileSpec,
    JobState,
    LaunchSpec,
    LocalSpec,
    PushSpec,
    SkyPilotSpec,
    SourceEvent,
    SourceKind,
    SourceSpec,
    backend_of,
)
from tailhub.daemon.errors import InvalidRequest
from tailhub.daemon.facts import MUTUAL_TLS, PLAINTEXT, TLS, HostFacts, ListenerFacts
from tailhub.daemon.fanout import ReadFrom
from tailhub.daemon.items import Ended, Heartbeat, TimeMark
from tailhub.daemon.live_job import Job
from tailhub.daemon.placement import ClusterView
from tailhub.v1 import tailhub_pb2 as pb

_STATES = {
    JobState.PENDING: pb.JOB_STATE_PENDING,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
_KINDS = {
    SourceKind.LOCAL: pb.SOURCE_KIND_LOCAL,
    SourceKind.FILE: pb.SOURCE_KIND_FILE,
    SourceKind.COMMAND: pb.SOURCE_KIND_COMMAND,
    SourceKind.PUSH: pb.SOURCE_KIND_PUSH,
    SourceKind.SKYPILOT: pb.SOURCE_KIND_SKYPILOT,
}


# -- requests -------------------------------------------------------------------------------------
def start_of(request: pb.SubscribeRequest) -> ReadFrom:
    """Where a Subscribe starts: an offset, the last lines, or a time."""
    which = request.WhichOneof("start")
    if which == "tail_lines":
        return ReadFrom(tail_lines=request.tail_lines)
    if which == "since_time":
        if not math.isfinite(request.since_time):
            raise InvalidRequest(f"since_time must be a finite time, not {request.since_time}")
        return ReadFrom(since_time=request.since_time)
    return ReadFrom(offset=request.offset)


def attach_spec(request: pb.AttachJobRequest) -> SourceSpec:
    """The source AttachJob names, its values checked."""
    which = request.WhichOneof("source")
    if which == "file":
        limits.check_attach(request.name, path=request.file.path)
        return FileSpec(path=request.file.path)
    if which == "command":
        command = request.command
        limits.check_attach(
            request.name, argv=command.argv, transport_exit_codes=command.transport_exit_codes
        )
        return CommandSpec(
            argv=tuple(command.argv),
            shell=command.shell,
            transport_exit_codes=frozenset(command.transport_exit_codes),
            stderr_events=command.stderr == pb.STDERR_MODE_EVENTS,
        )
    if which == "push":
        limits.check_name(request.name)
        return PushSpec()
    if which == "skypilot":
        limits.check_name(request.name)
        managed_id = request.skypilot.managed_job_id
        if managed_id < 1 or managed_id > 2**63 - 1:
            raise InvalidRequest("a SkyPilot managed job id is a positive number")
        return SkyPilotSpec(managed_job_id=managed_id)
    raise InvalidRequest("attach needs a source: file, command, push or skypilot")


def launch_spec(request: pb.LaunchJobRequest, default_backend: str) -> LaunchSpec:
    """What LaunchJob asks to run, and on which backend (none named: `default_backend`),
    checked against the API's limits first (over gRPC and the owner endpoint alike)."""
    limits.check_launch(
        request.name,
        run=request.run,
        setup=request.setup,
        workdir=request.workdir,
        envs=request.envs,
        environment=request.environment,
        task_yaml=request.task_yaml,
        backend=request.backend,
    )
    backend = request.backend or default_backend
    envs = tuple(sorted(request.envs.items()))
    environment = tuple(sorted(without_credentials(request.environment).items()))
    if backend == "skypilot":
        return SkyPilotSpec(
            task_yaml=request.task_yaml,
            workdir=request.workdir,
            name=request.name,
            envs=envs,
            environment=environment,
        )
    if backend != "local":
        raise InvalidRequest(f"unknown backend {limits.shown(backend)}: local or skypilot")
    return LocalSpec(
        run=request.run,
        setup=request.setup,
        workdir=request.workdir,
        envs=envs,
        environment=environment,
    )


# -- responses ------------------------------------------------------------------------------------
def job_message(job: Job) -> pb.Job:
    """A job as every response shows it (its reason and description cut for listing)."""
    record = job.record
    return pb.Job(
        id=record.id,
        name=record.name,
        state=_STATES[record.state],
        exit_code=record.exit_code,
        reason=record.reason[: limits.MAX_LISTED_REASON_CHARS],
        source_kind=_KINDS[record.spec.kind],
        source_description=record.spec.describe()[: limits.MAX_LISTED_DESCRIPTION_CHARS],
        log_size=max(job.log_size, job.placed.size),
        sealed=record.sealed or job.placed.sealed,
        upstream_connections=record.upstream_connections,
        upstream_connections_open=int(job.upstream_open),
        subscribers=job.subscribers,
        bytes_served=job.bytes_served,
        submitted_at=record.submitted_at,
        started_at=record.started_at,
        ended_at=record.ended_at,
        backend=backend_of(record.spec),
        external_id=record.external_id,
        lease_holder=job.placed.holder,
        home_node=job.placed.home,
    )


def cluster_message(view: ClusterView | None) -> pb.ClusterStatus | None:
    if view is None:
        return None
    return pb.ClusterStatus(
        node_name=view.node_name,
        redis=view.redis,
        connected=view.connected,
        leases_held=view.leases_held,
        stale_appends_refused=view.stale_appends_refused,
        nodes=view.nodes,
    )


_SECURITY = {
    PLAINTEXT: pb.LISTENER_SECURITY_PLAINTEXT,
    TLS: pb.LISTENER_SECURITY_TLS,
    MUTUAL_TLS: pb.LISTENER_SECURITY_MUTUAL_TLS,
}


def listener_message(listener: ListenerFacts) -> pb.ListenerStatus:
    return pb.ListenerStatus(
        address=listener.address,
        security=_SECURITY[listener.security],
        certificate_path=listener.certificate_path,
        certificate_not_after=listener.certificate_not_after,
        kind=listener.kind,
    )


def host_fields(facts: HostFacts) -> dict[str, int]:
    """The fields of GetDaemonStatusResponse known now (the others stay unset)."""
    fields = {
        "open_files": facts.open_files,
        "max_open_files": facts.max_open_files,
        "log_disk_free_bytes": facts.disk_free,
        "log_disk_total_bytes": facts.disk_total,
    }
    return {name: value for name, value in fields.items() if value is not None}


def subscribe_response(item: Heartbeat | SourceEvent | TimeMark | Ended) -> pb.SubscribeResponse:
    """A follow's item other than a chunk (chunks are encoded once for all: wire.py)."""
    if isinstance(item, Heartbeat):
        return pb.SubscribeResponse(
            heartbeat=pb.Heartbeat(log_size=item.log_size, state=_STATES[item.state])
        )
    if isinstance(item, SourceEvent):
        return pb.SubscribeResponse(event=event_message(item))
    if isinstance(item, TimeMark):
        return pb.SubscribeResponse(time_mark=pb.TimeMark(offset=item.offset, time=item.time))
    return pb.SubscribeResponse(end=_end_message(item))


def event_message(event: SourceEvent) -> pb.SourceEvent:
    return pb.SourceEvent(offset=event.offset, message=event.message, time=event.time)


def _end_message(ended: Ended) -> pb.End:
    return pb.End(
        state=_STATES[ended.state],
        exit_code=ended.exit_code,
        reason=ended.reason,
        log_size=ended.log_size,
        finished=ended.finished,
    )
