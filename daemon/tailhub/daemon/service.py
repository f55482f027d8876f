"""The gRPC layer: protobuf in, domain calls, protobuf (or pre-encoded bytes) out. Nothing else."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

from tailhub.daemon import __version__, callers, limits
from tailhub.daemon.budget import BudgetFigures, SendBudget
from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.errors import DOMAIN, DaemonError, WebViewOff
from tailhub.daemon.facts import RunFacts, host_facts
from tailhub.daemon.fanout import (
    ChunkRange,
    FilteredItem,
    FilterPacer,
    LineRun,
    LogItem,
    filter_lines,
    stream_log,
)
from tailhub.daemon.launch_keys import launch_key
from tailhub.daemon.line_filter import LineFilter
from tailhub.daemon.live_job import Job
from tailhub.daemon.manager import JobManager
from tailhub.daemon.messages import (
    attach_spec,
    cluster_message,
    event_message,
    host_fields,
    job_message,
    launch_spec,
    listener_message,
    start_of,
    subscribe_response,
)
from tailhub.daemon.wire import EncodedChunkCache, encode_chunk
from tailhub.v1 import tailhub_pb2 as pb

logger = logging.getLogger(__name__)

SERVICE_NAME = "tailhub.v1.TailhubService"
_CHUNK_CACHE_BYTES = 16 * 1024 * 1024
# The trailer of the standard rich error model: a google.rpc.Status whose details hold a
# google.rpc.ErrorInfo (reason: the error's kind), what any gRPC client can read.
STATUS_DETAILS_KEY = "grpc-status-details-bin"

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def rpc_status(
    error: DaemonError,
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """What a client is told of `error`: its status, its message, and the trailer holding
    both again with an ErrorInfo whose reason is the error's kind. The one place daemon
    errors become gRPC statuses (the servicer's methods and auth.py's refusals)."""
    message = error.message()
    info = error_details_pb2.ErrorInfo(reason=error.kind, domain=DOMAIN, metadata=error.metadata())
    status = status_pb2.Status(code=int(error.status), message=message)
    status.details.add().Pack(info)
    trailer = ((STATUS_DETAILS_KEY, status.SerializeToString()),)
    return grpc.StatusCode[error.status.name], message, trailer


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], error: Exception, call: str = "a call"
) -> NoReturn:
    """Ends the call with `error`; anything but a DaemonError is a bug: INTERNAL, logged
    (as `call` failed)."""
    if not isinstance(error, DaemonError):
        logger.error("%s failed", call, exc_info=error)
        error = DaemonError(f"internal error: {error}")
    code, message, trailer = rpc_status(error)
    await context.abort(code, message, trailing_metadata=trailer)


def _translating_errors(method: Handler) -> Handler:
    """Ends a call that raised with the status of its error (`abort`)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error, method.__name__)

    return cast("Handler", wrapper)


class TailhubServicer:
    def __init__(self, manager: JobManager, config: DaemonConfig) -> None:
        self._manager = manager
        self._config = config
        self._chunks = EncodedChunkCache(_CHUNK_CACHE_BYTES)
        manager.on_removed(self._chunks.forget)
        self._budget = SendBudget(config.subscriber_budget_bytes, config.min_chunk_bytes)
        self._filter_pacer = FilterPacer()
        # Set by the server once its listeners are bound (they are bound after the service
        # is registered on them); GetDaemonStatus reports it.
        self.run_facts = RunFacts()
        # Set by the server when it serves the web view (--http-listen): a login URL for the
        # caller (a token's name, None for the owner) and when its code expires.
        self.web_login: Callable[[str | None], tuple[str, float]] | None = None

    @property
    def budget(self) -> SendBudget:
        """The daemon-wide budget of bytes in flight, which the web view's streams share."""
        return self._budget

    @property
    def filter_pacer(self) -> FilterPacer:
        """Line filtering's share of the loop, which the web view's filtered streams share."""
        return self._filter_pacer

    def budget_figures(self) -> BudgetFigures:
        return self._budget.figures()

    async def subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """Yields serialized SubscribeResponse messages (registered without a serializer)."""
        manager = self._manager
        counts = manager.counts
        try:
            job = manager.get(request.job_id)
            start = start_of(request)
            line_filter = LineFilter.compile(request.grep, request.exclude)
            # From the end of the log (--tail, --since): all of it must be here first.
            await manager.prepare_read(job, catch_up=start.offset_from_end)
            read = stream_log(
                job,
                start,
                follow=request.follow,
                max_chunk=self._config.max_chunk_bytes,
                stopping=lambda: manager.stopping,
                budget=self._budget,
                scans=manager.scans,
                timestamps=request.timestamps,
                # A token's streams share one part of the budget (the owner's, another).
                share=callers.token(),
            )
            stream: AsyncGenerator[LogItem | FilteredItem, None] = (
                read
                if line_filter is None
                else filter_lines(read, job, line_filter, self._filter_pacer)
            )
            try:
                async for item in stream:
                    if isinstance(item, ChunkRange | LineRun):
                        if isinstance(item, ChunkRange):
                            encoded = self._encode_chunk(job, item)
                            end = item.end
                        else:  # the lines a filter passed: this follower's own
                            encoded = encode_chunk(item.offset, item.data)
                            end = item.offset + len(item.data)
                        sent = end - item.offset
                        job.bytes_served += sent
                        counts.bytes_served += sent
                        counts.lag.observe(job.log_size - end)
                        yield encoded
                    else:
                        yield subscribe_response(item).SerializeToString()
            finally:
                # A cancelled stream must release its subscriber slot now, not at GC time.
                await stream.aclose()
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error, f"subscription to job {request.job_id}")

    def _encode_chunk(self, job: Job, chunk: ChunkRange) -> bytes:
        key = (job.id, chunk.offset, chunk.end)
        encoded = self._chunks.get(key)
        if encoded is None:
            data = job.log.read(chunk.offset, chunk.end - chunk.offset)
            encoded = encode_chunk(chunk.offset, data)
            self._chunks.put(key, encoded)
        return encoded

    @_translating_errors
    async def attach_job(
        self, request: pb.AttachJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AttachJobResponse:
        spec = attach_spec(request)
        job = await self._manager.attach(request.name, spec, callers.token())
        return pb.AttachJobResponse(job=job_message(job))

    @_translating_errors
    async def launch_job(
        self, request: pb.LaunchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.LaunchJobResponse:
        spec = launch_spec(request, self._config.default_backend)
        # Checked where it enters; scoped to the caller: a key never reaches another's job.
        key = launch_key(callers.token(), request.launch_key)
        job = await self._manager.launch(request.name, spec, callers.token(), key)
        return pb.LaunchJobResponse(job=job_message(job))

    @_translating_errors
    async def publish(
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PublishResponse:
        limits.check_publish(request.data)
        self._manager.quota.check_log_bytes(callers.token(), request.job_id, len(request.data))
        expected = request.expected_offset if request.HasField("expected_offset") else None
        size = await self._manager.publish(request.job_id, request.data, expected)
        return pb.PublishResponse(log_size=size)

    @_translating_errors
    async def finish_job(
        self, request: pb.FinishJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FinishJobResponse:
        limits.check_finish(request.exit_code, request.reason)
        job = self._manager.finish(request.job_id, request.exit_code, request.reason)
        return pb.FinishJobResponse(job=job_message(job))

    @_translating_errors
    async def cancel_jobs(
        self, request: pb.CancelJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelJobsResponse:
        limits.check_job_ids(request.job_ids)
        result = await self._manager.cancel(list(request.job_ids), request.all)
        return pb.CancelJobsResponse(
            jobs=[job_message(job) for job in result.cancelled],
            unknown_job_ids=result.unknown,
            already_ended=[job_message(job) for job in result.already_ended],
        )

    @_translating_errors
    async def get_job(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetJobResponse:
        job = self._manager.get(request.job_id)
        return pb.GetJobResponse(
            job=job_message(job), events=[event_message(e) for e in job.events]
        )

    @_translating_errors
    async def list_jobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobsResponse:
        jobs, more = self._manager.newest(
            limits.page_size(request.page_size), below=limits.page_token(request.page_token)
        )
        listed: list[pb.Job] = []
        size = 0
        for job in jobs:
            message = job_message(job)
            size += message.ByteSize()
            if listed and size > limits.MAX_PAGE_BYTES:
                # Whatever the jobs hold, a page stays far below the message limit.
                more = True
                break
            listed.append(message)
        return pb.ListJobsResponse(
            jobs=listed,
            next_page_token=str(listed[-1].id) if more and listed else "",
            total_jobs=self._manager.job_count,
        )

    @_translating_errors
    async def remove_jobs(
        self, request: pb.RemoveJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RemoveJobsResponse:
        limits.check_job_ids(request.job_ids)
        ended_before = request.ended_before if request.HasField("ended_before") else None
        if ended_before is not None:
            limits.check_ended_before(ended_before)
        result = self._manager.remove(list(request.job_ids), ended_before=ended_before)
        if result.deleting is not None:
            # Answered once the files are gone too (deleted off the event loop).
            await result.deleting
        return pb.RemoveJobsResponse(
            removed_job_ids=result.removed,
            unknown_job_ids=result.unknown,
            not_ended_job_ids=result.not_ended,
            bytes_freed=result.bytes_freed,
        )

    @_translating_errors
    async def create_web_login(
        self, request: pb.CreateWebLoginRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateWebLoginResponse:
        if self.web_login is None:
            raise WebViewOff(
                "this daemon serves no web view: start it with --http-listen 127.0.0.1:PORT"
            )
        url, expires_at = self.web_login(callers.token())
        return pb.CreateWebLoginResponse(url=url, expires_at=expires_at)

    @_translating_errors
    async def get_daemon_status(
        self, request: pb.GetDaemonStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetDaemonStatusResponse:
        jobs = self._manager.all_jobs()
        return pb.GetDaemonStatusResponse(
            pid=os.getpid(),
            version=__version__,
            home=str(self._config.paths.home),
            started_at=self._manager.started_at,
            jobs=len(jobs),
            running_jobs=sum(not job.state.terminal for job in jobs),
            subscribers=sum(job.subscribers for job in jobs),
            upstream_connections=sum(job.record.upstream_connections for job in jobs),
            upstream_connections_open=sum(job.upstream_open for job in jobs),
            bytes_served=sum(job.bytes_served for job in jobs),
            cluster=cluster_message(self._manager.cluster_view()),
            api_version=pb.DESCRIPTOR.package,
            listeners=[listener_message(listener) for listener in self.run_facts.listeners],
            # One address, or several for a name that resolves to more (one per family).
            metrics_address=", ".join(self.run_facts.metrics_addresses),
            max_running_jobs=self._config.max_running_jobs or 0,
            subscriber_budget_bytes=self._config.subscriber_budget_bytes,
            max_streams=self.run_facts.max_streams,
            max_streams_per_token=self.run_facts.max_streams_per_token,
            retention_removed_jobs=self._manager.counts.retention_removed_jobs,
            retention_removed_bytes=self._manager.counts.retention_removed_bytes,
            # (The web view's listener takes no jobs: only the gRPC ones count.)
            max_jobs_per_token=(
                self._config.max_jobs_per_token if self.run_facts.grpc_listeners else 0
            ),
            # Off the loop: statvfs waits for a stalled file system.
            **host_fields(await asyncio.to_thread(host_facts, self._config.paths.logs)),
        )

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """All methods, registered by hand so that Subscribe can send pre-encoded bytes."""

        def unary(
            method: Callable[..., Awaitable[Any]], request: Any, response: Any
        ) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Subscribe": grpc.unary_stream_rpc_method_handler(
                    self.subscribe,
                    request_deserializer=pb.SubscribeRequest.FromString,
                    response_serializer=None,
                ),
                "AttachJob": unary(self.attach_job, pb.AttachJobRequest, pb.AttachJobResponse),
                "LaunchJob": unary(self.launch_job, pb.LaunchJobRequest, pb.LaunchJobResponse),
                "Publish": unary(self.publish, pb.PublishRequest, pb.PublishResponse),
                "FinishJob": unary(self.finish_job, pb.FinishJobRequest, pb.FinishJobResponse),
                "CancelJobs": unary(self.cancel_jobs, pb.CancelJobsRequest, pb.CancelJobsResponse),
                "GetJob": unary(self.get_job, pb.GetJobRequest, pb.GetJobResponse),
                "ListJobs": unary(self.list_jobs, pb.ListJobsRequest, pb.ListJobsResponse),
                "GetDaemonStatus": unary(
                    self.get_daemon_status, pb.GetDaemonStatusRequest, pb.GetDaemonStatusResponse
                ),
                "RemoveJobs": unary(self.remove_jobs, pb.RemoveJobsRequest, pb.RemoveJobsResponse),
                "CreateWebLogin": unary(
                    self.create_web_login, pb.CreateWebLoginRequest, pb.CreateWebLoginResponse
                ),
            },
        )
