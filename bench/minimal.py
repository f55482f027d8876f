"""The minimal grpc.aio fan-out server, paced like a log: the reference for capacity.

`bench.ceiling`'s server streams one pre-encoded message as fast as it can; this one does
the least a log fan-out must: it appends `bench.writer` lines at a fixed rate (flushed every
10 ms, as the writer does) to a buffer in memory, and each stream sends everything past its
offset (up to a cap) when it is ready, as one message, encoded once per range (streams at
the live edge share it). No disk, no jobs, no budget: what grpc.aio itself allows.

    python -m bench.minimal ADDRESS STREAMS RATE DURATION   (prints a JSON report)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.ceiling import own_cpu, start_subscribe_server
from bench.writer import LINE_BYTES, line
from tailhub.daemon.wire import encode_chunk
from tailhub.v1 import tailhub_pb2 as pb

MAX_CHUNK = 256 * 1024
INTERVAL = 0.01


class _Log:
    """The bytes written so far, a wake-up for streams waiting at the end, one shared encoding."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended = False
        self.changed = asyncio.Event()
        self._last: tuple[int, int, bytes] = (0, 0, b"")

    def append(self, data: bytes) -> None:
        self.data += data
        self.changed.set()
        self.changed = asyncio.Event()

    def chunk(self, offset: int) -> tuple[int, bytes]:
        end = min(len(self.data), offset + MAX_CHUNK)
        last_offset, last_end, encoded = self._last
        if (last_offset, last_end) != (offset, end):
            encoded = encode_chunk(offset, bytes(self.data[offset:end]))
            self._last = (offset, end, encoded)
        return end, encoded


async def serve(address: str, streams: int, rate: float, duration: float) -> dict[str, Any]:
    log = _Log()
    everyone = asyncio.Event()
    done = asyncio.Event()
    connected = finished = 0
    end = pb.SubscribeResponse(end=pb.End(state=pb.JOB_STATE_SUCCEEDED)).SerializeToString()

    async def subscribe(request: pb.SubscribeRequest, context: object) -> Any:
        nonlocal connected, finished
        connected += 1
        if connected == streams:
            everyone.set()
        offset = 0
        try:
            while True:
                if offset < len(log.data):
                    offset, message = log.chunk(offset)
                    yield message
                elif log.ended:
                    yield end
                    return
                else:
                    await log.changed.wait()
        finally:
            finished += 1
            if finished == streams:
                done.set()

    server = await start_subscribe_server(subscribe, address)
    await asyncio.wait_for(everyone.wait(), 120)
    started, cpu_before = time.time(), own_cpu()
    await _write(log, rate, duration)
    log.ended = True
    log.append(b"")
    await asyncio.wait_for(done.wait(), duration + 120)
    cpu = own_cpu() - cpu_before
    await server.stop(1)
    return {"started": started, "cpu": cpu, "log_bytes": len(log.data)}


async def _write(log: _Log, rate: float, duration: float) -> None:
    """What `bench.writer` does, in the server's own loop: due lines every 10 ms."""
    start = time.monotonic()
    total = int(rate * duration) // LINE_BYTES
    written = tick = 0
    while written < total:
        elapsed = time.monotonic() - start
        due = min(int(rate * min(elapsed, duration) / LINE_BYTES), total)
        if due > written:
            now = time.time()
            log.append(b"".join(line(now, sequence) for sequence in range(written, due)))
            written = due
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * INTERVAL - time.monotonic()))


if __name__ == "__main__":
    address, streams, rate, duration = sys.argv[1:5]
    print(json.dumps(asyncio.run(serve(address, int(streams), float(rate), float(duration)))))
