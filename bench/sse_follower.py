"""A client process holding many followers of the web view: SSE streams of a job's log.

    TAILHUB_WEB_SESSION=COOKIE python -m bench.sse_follower http://HOST:PORT \\
        --out RESULT.json --stream JOB[xCOUNT] ... [--timeout S]

Each stream is one HTTP/1.1 connection to `/api/events/jobs/{id}/log?offset=0`, as a browser's
EventSource holds one per tab. The client is kept cheap, so that the figures are the daemon's
and not its followers': a bare asyncio protocol per connection takes the chunked body and its
events apart in place, by hand, and a chunk's base64 is decoded and hashed once per process
for all the streams that got the same chunk (the others' are compared with it: `bench.chains`).
Each stream checks that its chunks are contiguous and that each `id:` is the offset after its
chunk, and ends with the sha256 of every byte it received; each chunk is a latency sample, as
`bench.follower` takes them: the write time of its first whole line to the time the bytes were
read off the socket. Results are written as `bench.follower` writes them
(`follower.collect` reads both). The session cookie comes from the environment, never argv.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bench.chains import Chains, Node
from bench.follower import Samples, StreamResult, parse_streams, write_report

if TYPE_CHECKING:
    from tailhub.client import Client

SESSION_ENV = "TAILHUB_WEB_SESSION"
COOKIE = "tailhub_session"

# A single job's chunk event as the daemon writes it (web/log_events.py); anything else is
# parsed the slow way.
_CHUNK_HEAD = b"event: chunk\nid: "
_DATA_HEAD = b'\ndata: {"offset":"'
_DATA_MID = b'","data":"'
_DATA_TAIL = b'"}'


def log_in(client: Client) -> str:
    """A session cookie's value, as a browser gets it: `tailhub web`'s one-time link, traded
    at /login for the cookie."""
    url, _ = client.web_login()
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        response.read()
        header = response.getheader("Set-Cookie") or ""
    finally:
        connection.close()
    name, _, rest = header.partition("=")
    if response.status != 303 or name != COOKIE:
        raise RuntimeError(f"login refused: HTTP {response.status} {header!r}")
    return rest.split(";", 1)[0]


def split_chunk(
    source: bytes | bytearray, start: int, end: int
) -> tuple[int, int, int, int] | None:
    """(id, offset, and where its base64 starts and ends) of the chunk event `source[start:end]`
    (no blank line after it) in the daemon's own layout, else None; nothing is copied."""
    if not source.startswith(_CHUNK_HEAD, start) or not source.endswith(_DATA_TAIL, start, end):
        return None
    id_start = start + len(_CHUNK_HEAD)
    id_end = source.find(b"\n", id_start, end)
    if id_end < 0 or not source.startswith(_DATA_HEAD, id_end):
        return None
    offset_start = id_end + len(_DATA_HEAD)
    offset_end = source.find(b'"', offset_start, end)
    if offset_end < 0 or not source.startswith(_DATA_MID, offset_end):
        return None
    return (
        int(source[id_start:id_end]),
        int(source[offset_start:offset_end]),
        offset_end + len(_DATA_MID),
        end - len(_DATA_TAIL),
    )


def parse_event(raw: bytes) -> tuple[str, str | None, Any]:
    """(name, id, the JSON of its data) of any event; name "" for a comment or a `retry:`."""
    name, event_id, data = "", None, None
    for line in raw.decode().split("\n"):
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "id":
            event_id = value
        elif field == "data":
            data = json.loads(value)
    if data is not None and not name:
        name = "message"
    return name, event_id, data


class Stream(asyncio.Protocol):
    """One follower on its own connection: an HTTP/1.1 GET read as it comes, its chunked
    body taken apart in place, and each event checked."""

    def __init__(
        self, result: StreamResult, chains: Chains, samples: Samples, request: bytes
    ) -> None:
        self.result = result
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chains = chains
        self._node: Node = chains.start()
        self._samples = samples
        self._request = request
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head = True  # the status line and headers still to read
        self._pending = b""  # a part of an event the last HTTP chunk left (none from tailhubd)
        self._expected = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self._buffer += data
        try:
            over = self._read(now)
        except (ValueError, KeyError, IndexError) as error:  # not what tailhubd sends
            self.result.error = f"bad response: {type(error).__name__}: {error}"
            over = True
        if over:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.result.error = self.result.error or (
                f"connection lost: {exc}" if exc else "the stream closed before its end event"
            )
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.result.sha256 = self._node.hexdigest()
        if not self.done.done():
            self.done.set_result(None)

    def _read(self, now: float) -> bool:
        """Takes what the buffer holds whole; True once the stream is over."""
        buffer = self._buffer
        if self._head:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return False
            head = bytes(buffer[:head_end]).decode("latin-1").lower()
            if not head.startswith("http/1.1 200 ") or "transfer-encoding: chunked" not in head:
                self.result.error = f"{head.splitlines()[0]}: {bytes(buffer[head_end + 4 :])!r}"
                return True
            self._head = False
            del buffer[: head_end + 4]
        at = 0
        try:
            while (size_end := buffer.find(b"\r\n", at)) >= 0:
                size = int(buffer[at:size_end], 16)
                start = size_end + 2
                if len(buffer) < start + size + 2:
                    break
                at = start + size + 2
                if size == 0 or self._events(buffer, start, start + size, now):
                    return True
        finally:
            del buffer[:at]
        return False

    def _events(self, buffer: bytearray, start: int, end: int, now: float) -> bool:
        """The events of one HTTP chunk, `buffer[start:end]`; True once the stream is over.
        tailhubd writes each event whole in one chunk: that is read in place. (Were there more
        than one, the base64 taken would hold the others' text: the chains refuse it, having
        compared it with base64 they decoded, or failing to decode it, and nothing changed.)"""
        if not self._pending and buffer.endswith(b"\n\n", start, end):
            chunk = split_chunk(buffer, start, end - 2)
            if chunk is not None:
                try:
                    self._chunk(buffer, *chunk, now)
                except ValueError:
                    pass
                else:
                    return False
        *events, self._pending = (self._pending + buffer[start:end]).split(b"\n\n")
        # Stops at the first event that ends the stream.
        return any(raw and self._event(raw, now) for raw in events)

    def _event(self, raw: bytes, now: float) -> bool:
        chunk = split_chunk(raw, 0, len(raw))
        if chunk is not None:
            self._chunk(raw, *chunk, now)
            return False
        name, event_id, data = parse_event(raw)
        if name == "chunk":
            text = data["data"].encode()
            self._chunk(text, int(event_id or -1), int(data["offset"]), 0, len(text), now)
        elif name == "end":
            self.result.ended = now
            self.result.state = f"JOB_STATE_{data['state']}"
            self.result.log_size = int(data["log_size"])
            return True
        elif name == "error":
            self.result.error = f"error event: {data['message']}"
            return True
        return False

    def _chunk(
        self,
        source: bytes | bytearray,
        event_id: int,
        offset: int,
        start: int,
        end: int,
        now: float,
    ) -> None:
        """A chunk event whose base64 is `source[start:end]`."""
        link = self._chains.step(self._node, offset, source, start, end)
        self._node = link.child
        after = offset + link.size
        if offset != self._expected or event_id != after:
            self.result.contiguous = False
        self._expected = after
        if not link.size:  # the stream's first event: where it starts
            return
        self.result.messages += 1
        self.result.bytes += link.size
        if link.written is not None:
            self._samples.latencies.append(now - link.written)
        self._samples.ranges.extend((offset, after))


async def follow(host: str, port: int, stream: Stream) -> None:
    stream.result.started = time.time()
    loop = asyncio.get_running_loop()
    try:
        await loop.create_connection(lambda: stream, host, port)
        await stream.done
    except OSError as error:
        stream.result.error = f"{type(error).__name__}: {error}"
        stream.close()
    except asyncio.CancelledError:
        stream.result.error = "timed out"
        stream.close()
        raise


async def follow_all(
    base: str, jobs: list[int], cookie: str, timeout: float
) -> tuple[list[StreamResult], Samples]:
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    samples = Samples()
    chains = {job: Chains(_decode) for job in jobs}
    # Every stream stands at its chain's start before any chunk comes (see Chains.start).
    streams = [
        Stream(StreamResult(job), chains[job], samples, _request(parts.netloc, job, cookie))
        for job in jobs
    ]
    tasks = [asyncio.create_task(follow(host, port, stream)) for stream in streams]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return [stream.result for stream in streams], samples


def _request(netloc: str, job: int, cookie: str) -> bytes:
    return (
        f"GET /api/events/jobs/{job}/log?offset=0 HTTP/1.1\r\n"
        f"Host: {netloc}\r\n"
        f"Cookie: {COOKIE}={cookie}\r\n"
        "Accept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()


def _decode(text: bytes) -> bytes:
    return base64.b64decode(text, validate=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="http://HOST:PORT of the web view")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stream", action="append", required=True, metavar="JOB[xCOUNT]")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    cookie = os.environ.get(SESSION_ENV)
    if not cookie:
        parser.error(f"no session: set ${SESSION_ENV}")
    results, samples = asyncio.run(
        follow_all(args.base, parse_streams(args.stream), cookie, args.timeout)
    )
    write_report(args.out, results, samples)


if __name__ == "__main__":
    main()
