"""Prometheus metrics: the daemon's figures, an RPC-counting interceptor, and `GET /metrics`.

Figures the jobs already hold (states, subscribers, open upstreams) are read from the job
manager when Prometheus scrapes, by a custom collector; totals nothing else keeps come from
`DaemonCounts` (plain integers the hot paths add to). No job id or name is ever a label: they
are unbounded, and names may say more than an operator wants in a monitoring system.

`/metrics` is served from the event loop, not from `prometheus_client`'s HTTP thread: the
collector walks the manager's job dict, which the loop mutates, and reading it from another
thread could fail mid-iteration ("dictionary changed size") or see half-made changes. A scrape
costs one pass over the jobs, on the loop, a few times a minute.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from tailhub.daemon.auth import ROLES
from tailhub.daemon.config import format_host_port
from tailhub.daemon.domain import JobState
from tailhub.daemon.errors import MetricsListenError
from tailhub.daemon.facts import ListenerFacts
from tailhub.daemon.listeners import EXIT_ADDRESS
from tailhub.daemon.manager import JobManager

logger = logging.getLogger(__name__)

# Generic in the type stubs only.
if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor

# A request head larger than this is refused (a scrape's is a few hundred bytes).
MAX_REQUEST_BYTES = 8 * 1024
# Seconds a client has to send its request head, and to take the response: a client that
# sends or reads nothing (slowloris) is dropped after them.
REQUEST_TIMEOUT = 5.0
RESPONSE_TIMEOUT = 10.0
# Connections held at once; a new one past it closes the oldest (Prometheus scrapes one at a
# time, and sends its request at once: idle connections holding every slot would otherwise
# keep it out until they time out).
MAX_CONNECTIONS = 32
# The label an RPC with no handler gets (its path is the client's choice: unbounded).
UNKNOWN_METHOD = "unknown"
# The service label of the owner endpoint's requests (its CLI's launches and follows).
OWNER_SERVICE = "tailhub.owner"


class DaemonMetrics:
    """The daemon's metrics registry (its own, never the global one)."""

    def __init__(self, manager: JobManager) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._collector = _DaemonCollector(manager)
        self.registry.register(self._collector)
        ProcessCollector(namespace="tailhub", registry=self.registry)
        self._rpcs = Counter(
            "tailhub_rpcs",
            "RPCs finished, by service, method and gRPC status code (errors: code != OK)",
            ("service", "method", "code"),
            registry=self.registry,
        )

    @property
    def listeners(self) -> tuple[ListenerFacts, ...]:
        return self._collector.listeners

    @listeners.setter
    def listeners(self, listeners: tuple[ListenerFacts, ...]) -> None:
        """The TCP listeners as bound (set once they are): their certificates' expiry."""
        self._collector.listeners = listeners

    def interceptor(self) -> grpc.aio.ServerInterceptor[Any, Any]:
        """A server interceptor counting every RPC by method and status code; attach it first
        (outermost) to any server, so that calls refused by later interceptors count too."""
        return counting_interceptor(self._count_rpc)

    def _count_rpc(self, service: str, method: str, code: grpc.StatusCode) -> None:
        self._rpcs.labels(service, method, code.name).inc()

    def count_owner_request(self, method: str, code: str) -> None:
        """A request to the owner's lean endpoint (owner_http.py), as the RPC it stands for."""
        self._rpcs.labels(OWNER_SERVICE, method, code).inc()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """Every metric as read now, in the format the `Accept` header asks for (Prometheus's
        text format by default, OpenMetrics on request); and its content type."""
        try:
            encoder, content_type = choose_encoder(accept)
        except Exception:
            # (`version=x` raised TypeError, with a traceback per request): any client that
            # asks oddly gets the default format, the way a missing Accept does.
            encoder, content_type = choose_encoder("")
        return encoder(self.registry), content_type


class _DaemonCollector(Collector):
    """Reads the jobs and the daemon's counts at scrape time."""

    def __init__(self, manager: JobManager) -> None:
        self._manager = manager
        self.listeners: tuple[ListenerFacts, ...] = ()

    def collect(self) -> Iterator[Metric]:
        manager = self._manager
        counts = manager.counts
        jobs = manager.all_jobs()
        by_state = dict.fromkeys(JobState, 0)
        subscribers = upstream_open = 0
        for job in jobs:
            by_state[job.state] += 1
            subscribers += job.subscribers
            upstream_open += job.upstream_open
        states = GaugeMetricFamily(
            "tailhub_jobs", "Jobs the daemon holds, by state", labels=("state",)
        )
        for state, number in by_state.items():
            states.add_metric((state.value,), number)
        yield states
        yield GaugeMetricFamily(
            "tailhub_subscribers", "Subscribe streams open now", value=subscribers
        )
        yield GaugeMetricFamily(
            "tailhub_upstream_connections_open",
            "Upstream connections (fetches from a source) open now",
            value=upstream_open,
        )
        yield CounterMetricFamily(
            "tailhub_upstream_connections_opened",
            "Upstream connections opened since the daemon started",
            value=counts.upstream_connections_opened,
        )
        yield CounterMetricFamily(
            "tailhub_upstream_reconnects",
            "Upstream connections opened for a job beyond its first, since the daemon started",
            value=counts.reconnects,
        )
        yield CounterMetricFamily(
            "tailhub_fetched_bytes",
            "Bytes appended to job logs (fetched, published, or written by local jobs)",
            value=counts.bytes_fetched,
        )
        yield CounterMetricFamily(
            "tailhub_served_bytes",
            "Log bytes sent to subscribers",
            value=counts.bytes_served,
        )
        lag = counts.lag
        yield HistogramMetricFamily(
            "tailhub_subscriber_lag_bytes",
            "Bytes a subscriber is behind the log's end, observed at each chunk sent to it",
            buckets=[(_le(bound), number) for bound, number in lag.cumulative()],
            sum_value=lag.total,
        )
        expiry = GaugeMetricFamily(
            "tailhub_tls_certificate_expiry_seconds",
            "When the certificate a TLS listener serves stops being valid (Unix time); alert "
            "on it minus time() (the daemon also warns in its log from 14 days before)",
            labels=["listener"],
        )
        for listener in self.listeners:
            if listener.certificate_not_after is not None:
                expiry.add_metric([listener.address], listener.certificate_not_after)
        yield expiry


def _le(bound: float) -> str:
    """A bucket's `le` label as Prometheus's own histograms write it: 4096.0, +Inf."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def counting_interceptor(
    count: Callable[[str, str, grpc.StatusCode], None],
) -> grpc.aio.ServerInterceptor[Any, Any]:
    """An interceptor calling `count(service, method, code)` as each RPC ends."""
    return _RpcCounter(count)


class _RpcCounter(_Interceptor):
    def __init__(self, count: Callable[[str, str, grpc.StatusCode], None]) -> None:
        self._count = count

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        # None when no handler has the method (the stubs do not say so).
        handler = cast(
            "grpc.RpcMethodHandler[Any, Any] | None", await continuation(handler_call_details)
        )
        if handler is None:
            # gRPC answers UNIMPLEMENTED; the path is not a label (any client can make one up).
            self._count(UNKNOWN_METHOD, UNKNOWN_METHOD, grpc.StatusCode.UNIMPLEMENTED)
            return None  # type: ignore[return-value]
        path = handler_call_details.method
        if path not in ROLES:
            # A handler for a path nobody serves: the auth interceptor's refusal of a caller
            # with no token. Its path is still made up, so it is no label either.
            return _counted(handler, lambda code: self._count(UNKNOWN_METHOD, UNKNOWN_METHOD, code))
        service, _, method = path.lstrip("/").rpartition("/")
        return _counted(handler, lambda code: self._count(service, method, code))


def _counted(
    handler: grpc.RpcMethodHandler[Any, Any], done: Callable[[grpc.StatusCode], None]
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler, calling `done` with the status code once the call ends."""
    options: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
        return grpc.unary_unary_rpc_method_handler(
            _counted_call(handler.unary_unary, done), **options
        )
    if handler.stream_unary is not None and inspect.iscoroutinefunction(handler.stream_unary):
        return grpc.stream_unary_rpc_method_handler(
            _counted_call(handler.stream_unary, done), **options
        )
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        return grpc.unary_stream_rpc_method_handler(
            _counted_stream(handler.unary_stream, done), **options
        )
    if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
        return grpc.stream_stream_rpc_method_handler(
            _counted_stream(handler.stream_stream, done), **options
        )
    # A synchronous handler (run on gRPC's threads) or one writing through the context: left
    # as it is, uncounted (the daemon registers none).
    return handler


def _counted_call(
    behaviour: Callable[..., Any], done: Callable[[grpc.StatusCode], None]
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        code = grpc.StatusCode.UNKNOWN
        try:
            result = await behaviour(request, context)
            code = _code_of(context, grpc.StatusCode.OK)
            return result
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = _code_of(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            done(code)

    return call


def _counted_stream(
    behaviour: Callable[..., Any], done: Callable[[grpc.StatusCode], None]
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    # One more generator between gRPC and the handler: ~0.1-0.2 us per message (measured),
    # against the ~20 us gRPC spends on each.
    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        code = grpc.StatusCode.UNKNOWN
        responses = behaviour(request, context)
        try:
            async for response in responses:
                yield response
            code = _code_of(context, grpc.StatusCode.OK)
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = _code_of(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            # Closed now, not when collected: the handler's own cleanup (a subscriber slot)
            # must run when the call ends.
            try:
                aclose = getattr(responses, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                done(code)

    return stream


def _code_of(
    context: grpc.aio.ServicerContext[Any, Any], default: grpc.StatusCode
) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else default


class MetricsEndpoint:
    """`GET /metrics` over HTTP/1.x on the event loop; any other path is 404.

    Bounded: a request head of at most `MAX_REQUEST_BYTES`, sent within `REQUEST_TIMEOUT`;
    the response taken within `RESPONSE_TIMEOUT`; at most `MAX_CONNECTIONS` at once (a new one
    closes the oldest); one request per connection. No authentication: bind it where only
    Prometheus can reach it.
    """

    def __init__(self, metrics: DaemonMetrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        # Oldest first (a dict keeps insertion order).
        self._connections: dict[asyncio.StreamWriter, None] = {}

    @property
    def addresses(self) -> list[str]:
        """Where it listens, `HOST:PORT` each (the real port when 0 was asked for)."""
        if self._server is None:
            return []
        return [format_host_port(*sock.getsockname()[:2]) for sock in self._server.sockets]

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self._host, self._port, limit=MAX_REQUEST_BYTES
            )
        except OSError as error:
            # asyncio's own message repeats the address: the system's words say it once.
            code = error.errno or 0
            reason = os.strerror(code) if code > 0 else error.strerror or str(error)
            raise MetricsListenError(
                f"cannot serve metrics on {format_host_port(self._host, self._port)}: "
                f"{reason.lower()} (--metrics-listen)",
                EXIT_ADDRESS,
            ) from None
        logger.info("metrics on http://%s/metrics (no authentication)", ", ".join(self.addresses))

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            oldest = next(iter(self._connections))
            del self._connections[oldest]
            oldest.transport.abort()
        self._connections[writer] = None
        # drain() returns only once everything is handed to the kernel, so a client that
        # stops reading is caught by the response timeout, not left holding a buffer.
        writer.transport.set_write_buffer_limits(high=0)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            except asyncio.LimitOverrunError:
                response = _response(431, "Request Header Fields Too Large", b"request too large\n")
            else:
                response = self._answer(head)
            writer.write(response)
            await asyncio.wait_for(writer.drain(), RESPONSE_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.transport.abort()
        except Exception:  # a scrape must never take the daemon down
            logger.exception("serving a metrics request failed")
            writer.transport.abort()
        finally:
            self._connections.pop(writer, None)
            writer.close()

    def _answer(self, head: bytes) -> bytes:
        request_line = head.split(b"\r\n", 1)[0].split(b" ")
        if len(request_line) != 3 or not request_line[2].startswith(b"HTTP/"):
            return _response(400, "Bad Request", b"bad request\n")
        method, target, _ = request_line
        path = target.split(b"?", 1)[0]
        accept = ""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"accept":
                accept = value.strip().decode("latin-1")
        if path != b"/metrics":
            return _response(404, "Not Found", b"not found; metrics are at /metrics\n")
        if method not in (b"GET", b"HEAD"):
            return _response(405, "Method Not Allowed", b"GET only\n", allow=True)
        body, content_type = self._metrics.render(accept)
        return _response(200, "OK", body, content_type=content_type, head=method == b"HEAD")


def _response(
    status: int,
    reason: str,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    allow: bool = False,
    head: bool = False,
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if allow:
        lines.append("Allow: GET, HEAD")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)
