"""The owner's lean endpoint: a strict, small HTTP/1.1 on a second Unix socket in the home.

`tailhub jobs logs` and `tailhub jobs launch` speak it with the standard library alone, so
that a follower's process never imports grpc (issue 19, item 4). gRPC stays the contract for
programs; this serves the owner's CLI (and `curl --unix-socket HOME/owner.sock`). It sits
beside the gRPC socket in the 0700 home, 0600 too, served by a standalone daemon only (a
node's CLI needs gRPC's failover); metrics count its requests under the RPC each stands for
(service "tailhub.owner"). One request per connection (`Connection: close`):

    GET  /v1/jobs?page_size=N&page_token=T    a page of jobs, newest first (JSON)
    GET  /v1/jobs/ID                           one job (JSON)
    GET  /v1/jobs/ID/log?offset=O|tail_lines=N&follow=0|1
                                               the log as frames, until the stream ends
    POST /v1/jobs                              LaunchJob: its fields as a JSON object

A log is the same cursor as a gRPC Subscribe (`fanout.stream_log`, under the daemon-wide
budget: a grant is given back once its frame is written). Frames, binary-safe:
TYPE (1 byte) LENGTH (4 bytes, big-endian) PAYLOAD, where TYPE is
    C  a chunk: its offset (8 bytes, big-endian), then the log's bytes as they are
    E  an upstream event: its offset (8 bytes, big-endian), then its message (UTF-8)
    H  a heartbeat, lines of text: the log's size, the job's state
    Z  the end, lines of text: state, exit code (empty: none), finished (1 or 0), the log's
       size, then the reason (UTF-8, the rest of the payload, newlines and all)
    X  the error that ended the stream, lines of text: its status, its kind, its message
An error before the stream begins is an HTTP status with {"error": {"status", "kind",
"message"}}: the same DaemonError, status and kind as the gRPC call would give.

Distrust: the request head is at most MAX_HEAD_BYTES and must come within HEAD_TIMEOUT
seconds, a body at most the gRPC API's request limit; anything else is refused with a status
and the connection closed. No request can take the daemon down: each is served in a task of
its own, and whatever goes wrong in it ends that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import struct
from collections.abc import AsyncGenerator, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from tailhub.daemon import limits
from tailhub.daemon.budget import SendBudget
from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.domain import SourceEvent
from tailhub.daemon.errors import DaemonError, HttpRequestRefused, InvalidRequest, Status
from tailhub.daemon.fanout import ChunkRange, ReadFrom, stream_log
from tailhub.daemon.items import Ended, Heartbeat
from tailhub.daemon.launch_keys import launch_key
from tailhub.daemon.live_job import Job
from tailhub.daemon.manager import JobManager
from tailhub.daemon.messages import launch_spec
from tailhub.v1 import tailhub_pb2 as pb

logger = logging.getLogger(__name__)

SOCKET_NAME = "owner.sock"
MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
MAX_BODY_BYTES = limits.MAX_REQUEST_BYTES
LOG_TYPE = "application/vnd.tailhub.log"
# A frame's type and length; a chunk's offset.
FRAME_HEAD = struct.Struct(">cI")
OFFSET = struct.Struct(">Q")

_HTTP_STATUS = {
    Status.INVALID_ARGUMENT: 400,
    Status.OUT_OF_RANGE: 400,
    Status.UNAUTHENTICATED: 401,
    Status.PERMISSION_DENIED: 403,
    Status.NOT_FOUND: 404,
    Status.FAILED_PRECONDITION: 409,
    Status.ABORTED: 409,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.UNIMPLEMENTED: 501,
    Status.UNAVAILABLE: 503,
}
_REQUEST_LINE = re.compile(rb"(GET|POST|[A-Z]{1,16}) (/[!-~]{0,2047}) HTTP/1\.[01]")
_NUMBER = re.compile(r"[0-9]{1,19}")
_JOB_PATH = re.compile(r"/v1/jobs/([0-9]{1,19})(/log)?")
_LAUNCH_TEXT = ("name", "run", "setup", "workdir", "backend", "task_yaml", "launch_key")
_LAUNCH_MAPS = ("envs", "environment")


class OwnerEndpoint:
    """Serves the owner's lean endpoint on `socket_path` from the daemon's loop."""

    def __init__(self, manager: JobManager, config: DaemonConfig, budget: SendBudget) -> None:
        self._manager = manager
        self._config = config
        self._budget = budget
        self._server: asyncio.AbstractServer | None = None
        self._path: Path | None = None
        # Every connection's task: cancelled at close.
        self._tasks: set[asyncio.Task[None]] = set()
        # Told of every request as (the RPC it stands for, its status code's name): metrics.
        self.on_request: Callable[[str, str], None] | None = None

    async def start(self, socket_path: Path) -> None:
        """Binds the socket (0600 from the start) and serves; returns once it is bound."""
        with contextlib.suppress(FileNotFoundError):
            # A stale one of an earlier daemon (the lock is ours).
            os.unlink(socket_path)
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._accepted, path=os.fspath(socket_path), limit=MAX_HEAD_BYTES
            )
        finally:
            os.umask(old_umask)
        self._path = socket_path

    async def close(self, grace: float = 0.0) -> None:
        """Stops accepting, lets streams end (they are told "daemon stopping") for at most
        `grace` seconds, then cancels what is left and removes the socket."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._tasks and grace > 0:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._connection(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rpc = ["unknown"]  # the RPC the request stands for, once its head is read
        code = "OK"
        try:
            await self._serve(reader, writer, rpc)
        except (ConnectionError, asyncio.IncompleteReadError):
            code = "CANCELLED"  # the client went away
        except DaemonError as error:
            code = error.status.name
            with contextlib.suppress(ConnectionError):
                await _send_daemon_error(writer, error)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            logger.exception("the owner endpoint failed a request")
            with contextlib.suppress(ConnectionError):
                await _send_error(writer, 500, "INTERNAL", "INTERNAL", "internal error")
        finally:
            if self.on_request is not None:
                self.on_request(rpc[0], code)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rpc: list[str]
    ) -> None:
        method, target, headers = await _read_head(reader)
        path, _, query_text = target.partition("?")
        query = _query(query_text)
        rpc[0] = _rpc_of(method, path)
        if path == "/v1/jobs":
            if method == "POST":
                body = await _read_body(reader, headers)
                await _send_json(writer, 200, {"job": await self._launch(body)})
                return
            _allow(method, "GET")
            await _send_json(writer, 200, self._list(query))
            return
        matched = _JOB_PATH.fullmatch(path)
        if matched is None:
            raise HttpRequestRefused(404, f"no such resource: {path[:200]}")
        _allow(method, "GET")
        job = self._manager.get(int(matched.group(1)))
        if matched.group(2) is None:
            await _send_json(writer, 200, {"job": job_json(job)})
            return
        await self._log(job, query, reader, writer)

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        page_size = _number(query, "page_size", 0)
        token = query.get("page_token", "")
        if len(token) > 20:
            raise InvalidRequest("page_token is not one this daemon gave")
        jobs, more = self._manager.newest(
            limits.page_size(page_size), below=limits.page_token(token)
        )
        listed = [job_json(job) for job in jobs]
        return {
            "jobs": listed,
            "next_page_token": str(listed[-1]["id"]) if more and listed else "",
            "total_jobs": self._manager.job_count,
        }

    async def _launch(self, body: bytes) -> dict[str, Any]:
        """LaunchJob's own checks and call, on fields taken from JSON (each checked first)."""
        try:
            fields = json.loads(body)
        except (ValueError, RecursionError):
            raise HttpRequestRefused(400, "the body is not a JSON object") from None
        if not isinstance(fields, dict):
            raise HttpRequestRefused(400, "the body is not a JSON object")
        unknown = set(fields) - {*_LAUNCH_TEXT, *_LAUNCH_MAPS}
        if unknown:
            raise HttpRequestRefused(400, f"unknown field {sorted(unknown)[0][:64]!r}")
        for key in _LAUNCH_TEXT:
            _check_text(key, fields.get(key, ""))
        for key in _LAUNCH_MAPS:
            value = fields.get(key, {})
            if not isinstance(value, dict):
                raise HttpRequestRefused(400, f"{key} must be an object of strings")
            for name, text in value.items():
                _check_text(key, name)
                _check_text(key, text)
        request = pb.LaunchJobRequest(**fields)
        spec = launch_spec(request, self._config.default_backend)
        # The socket's peer is the owner, as on the gRPC socket: no token, no quota; its key
        # is the owner's, as there (a launch called again either way gets its job back).
        scoped = launch_key(None, request.launch_key)
        return job_json(await self._manager.launch(request.name, spec, None, scoped))

    async def _log(
        self,
        job: Job,
        query: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        follow = query.get("follow", "1") != "0"
        if "tail_lines" in query:
            start = ReadFrom(tail_lines=_number(query, "tail_lines", 0))
        else:
            start = ReadFrom(offset=_number(query, "offset", 0))
        manager = self._manager
        await manager.prepare_read(job, catch_up=start.offset_from_end)
        stream = stream_log(
            job,
            start,
            follow=follow,
            max_chunk=self._config.max_chunk_bytes,
            stopping=lambda: manager.stopping,
            budget=self._budget,
            scans=manager.scans,
            share=None,  # the owner's part of the budget, as on the gRPC socket
        )
        # Resolved before the head goes: a bad offset is a status, not a broken stream.
        first = await _first(stream)
        await _send_head(writer, 200, LOG_TYPE)
        # The client sends nothing more: its end (EOF) means it went away, then the cursor
        # is let go at once, not at the next write.
        gone = asyncio.ensure_future(reader.read(1))
        pump = asyncio.ensure_future(self._pump(job, first, stream, writer))
        try:
            await asyncio.wait({gone, pump}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done() and not pump.cancelled() and pump.exception() is not None:
                error = pump.exception()
                if not isinstance(error, ConnectionError):
                    # A bug: logged; the stream just ends (its head is gone), and the client
                    # goes on over gRPC.
                    logger.error("a lean log stream of job %d failed", job.id, exc_info=error)
        finally:
            for task in (gone, pump):
                task.cancel()
            await asyncio.gather(gone, pump, return_exceptions=True)
            await stream.aclose()

    async def _pump(
        self,
        job: Job,
        first: Any,
        stream: AsyncGenerator[Any, None],
        writer: asyncio.StreamWriter,
    ) -> None:
        counts = self._manager.counts
        item = first
        try:
            while item is not None:
                if isinstance(item, ChunkRange):
                    data = job.log.read(item.offset, item.end - item.offset)
                    writer.write(_frame(b"C", OFFSET.pack(item.offset) + data))
                    sent = item.end - item.offset
                    job.bytes_served += sent
                    counts.bytes_served += sent
                    counts.lag.observe(job.log_size - item.end)
                else:
                    writer.write(_item_frame(item))
                # Drained before the next item: the budget's grant is held until then.
                await writer.drain()
                item = await anext(stream, None)
        except ConnectionError:
            raise  # the client went away: nothing to tell it
        except (DaemonError, ValueError, OSError) as error:
            # Said in the stream (its head is gone): the client goes on over gRPC, which
            # says the same in its words. Anything else is a bug, logged by _connection.
            if not isinstance(error, DaemonError):
                logger.warning("a lean log stream of job %d failed: %s", job.id, error)
                error = DaemonError(f"internal error: {error}")
            fields = _error_fields(error)
            writer.write(_frame(b"X", _lines(fields["status"], fields["kind"], fields["message"])))
            await writer.drain()


async def _first(stream: AsyncGenerator[Any, None]) -> Any:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


def _item_frame(item: Any) -> bytes:
    if isinstance(item, SourceEvent):
        return _frame(b"E", OFFSET.pack(item.offset) + item.message.encode("utf-8", "replace"))
    if isinstance(item, Heartbeat):
        return _frame(b"H", _lines(item.log_size, item.state.value))
    if isinstance(item, Ended):
        exit_code = "" if item.exit_code is None else item.exit_code
        fields = (item.state.value, exit_code, int(item.finished), item.log_size, item.reason)
        return _frame(b"Z", _lines(*fields))
    raise TypeError(f"unexpected item {type(item).__name__}")


def _lines(*fields: object) -> bytes:
    return "\n".join(str(field) for field in fields).encode("utf-8", "replace")


def _rpc_of(method: str, path: str) -> str:
    """The gRPC method a request does the work of (the metrics' label for it)."""
    if path == "/v1/jobs":
        return "LaunchJob" if method == "POST" else "ListJobs"
    matched = _JOB_PATH.fullmatch(path)
    return "unknown" if matched is None else "Subscribe" if matched.group(2) else "GetJob"


def job_json(job: Job) -> dict[str, Any]:
    """A job as the endpoint shows it (what the CLI's lean path reads)."""
    record = job.record
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state.value,
        "exit_code": record.exit_code,
        "reason": record.reason[: limits.MAX_LISTED_REASON_CHARS],
        "source": record.spec.kind.value,
        "log_size": max(job.log_size, job.placed.size),
        "sealed": record.sealed or job.placed.sealed,
    }


def _frame(kind: bytes, payload: bytes) -> bytes:
    return FRAME_HEAD.pack(kind, len(payload)) + payload


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()


def _error_fields(error: DaemonError) -> dict[str, str]:
    return {"status": error.status.name, "kind": error.kind, "message": error.message()}


def _check_text(key: str, value: object) -> None:
    if not isinstance(value, str):
        raise HttpRequestRefused(400, f"{key} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise HttpRequestRefused(400, f"{key} is not valid UTF-8") from None


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpRequestRefused(405, f"{method} is not allowed here: {allowed}")


def _query(text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, strict_parsing=bool(text), errors="strict", max_num_fields=8)
    except (ValueError, UnicodeDecodeError):
        raise HttpRequestRefused(400, "the query cannot be read") from None
    query = dict(pairs)
    if len(query) != len(pairs):
        raise HttpRequestRefused(400, "a query parameter is given twice")
    return query


def _number(query: dict[str, str], key: str, default: int) -> int:
    text = query.get(key)
    if text is None:
        return default
    if _NUMBER.fullmatch(text) is None:
        raise HttpRequestRefused(400, f"{key} must be a whole number, not {text[:40]!r}")
    return int(text)


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """The request line and headers, within HEAD_TIMEOUT and MAX_HEAD_BYTES."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
    except asyncio.LimitOverrunError:
        raise HttpRequestRefused(431, f"the request head is over {MAX_HEAD_BYTES} bytes") from None
    except asyncio.TimeoutError:
        raise HttpRequestRefused(
            400, f"no whole request head within {HEAD_TIMEOUT:.0f} s"
        ) from None
    line, *fields = head[:-4].split(b"\r\n")
    matched = _REQUEST_LINE.fullmatch(line)
    if matched is None:
        raise HttpRequestRefused(400, "not an HTTP/1.1 request line")
    headers: dict[str, str] = {}
    for field in fields:
        name, colon, value = field.partition(b":")
        if not colon or not name or name != name.strip() or not name.isascii():
            raise HttpRequestRefused(400, "a header line cannot be read")
        headers[name.decode().lower()] = value.strip().decode("latin-1")
    return matched.group(1).decode(), matched.group(2).decode(), headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "transfer-encoding" in headers:
        raise HttpRequestRefused(501, "a chunked body is not taken: send Content-Length")
    length_text = headers.get("content-length")
    if length_text is None:
        raise HttpRequestRefused(411, "a body needs Content-Length")
    if _NUMBER.fullmatch(length_text) is None:
        raise HttpRequestRefused(400, "Content-Length is not a number")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise HttpRequestRefused(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        return await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT)
    except asyncio.TimeoutError:
        raise HttpRequestRefused(400, f"no whole body within {BODY_TIMEOUT:.0f} s") from None


async def _send_head(writer: asyncio.StreamWriter, status: int, content_type: str) -> None:
    writer.write(_head(status, content_type, None))
    await writer.drain()


def _head(status: int, content_type: str, length: int | None) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Content-Type: {content_type}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _send_json(writer: asyncio.StreamWriter, status: int, value: Any) -> None:
    body = _json(value) + b"\n"
    writer.write(_head(status, "application/json", len(body)) + body)
    await writer.drain()


async def _send_daemon_error(writer: asyncio.StreamWriter, error: DaemonError) -> None:
    fields = _error_fields(error)
    if isinstance(error, HttpRequestRefused):
        status = error.http_status
    else:
        status = _HTTP_STATUS.get(error.status, 500)
    await _send_error(writer, status, fields["status"], fields["kind"], fields["message"])


async def _send_error(
    writer: asyncio.StreamWriter, status: int, code: str, kind: str, message: str
) -> None:
    await _send_json(
        writer, status, {"error": {"status": code or str(status), "kind": kind, "message": message}}
    )


def socket_path(root: Path) -> Path:
    """Where the endpoint listens in a state directory (its opened home in the daemon)."""
    return root / SOCKET_NAME
