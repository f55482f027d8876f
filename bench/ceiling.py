"""Scenario 4, ceiling: what a minimal grpc.aio server streams on this machine.

A server that does nothing but yield one pre-encoded `SubscribeResponse{chunk}` (registered
with `response_serializer=None`, as the daemon's Subscribe is) to N streams for a fixed time,
received by the same follower processes as the fan-out. Message size and N are those of the
fan-out runs at the largest N, so the daemon's figures can be stated as a fraction of these.

The server side runs as `python -m bench.ceiling ADDRESS STREAMS SIZE DURATION`.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench import follower
from bench.report import Table, number
from bench.writer import line
from harness.processes import ProcessSet, python_module
from harness.waiting import wait_until
from tailhub.daemon.wire import encode_chunk
from tailhub.v1 import tailhub_pb2 as pb

# The fan-out's follower count and message size when there is no fan-out result to copy.
DEFAULT_LOAD = (1000, 200_000)


@dataclass(frozen=True)
class Settings:
    duration: float = 8.0
    clients: int = 4


FULL = Settings()
QUICK = Settings(duration=2.0, clients=2)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    runs = [
        _run_one(settings, streams, size, scratch / f"c{index}")
        for index, (streams, size) in enumerate(_loads(earlier.get("fanout", {})))
    ]
    return {"status": "ok", "settings": asdict(settings), "runs": runs}


def _loads(fanout: dict[str, Any]) -> list[tuple[int, int]]:
    """(streams, message size) of every fan-out run at the largest N."""
    # The fan-out's runs over the Unix socket: the ceiling is a Unix-socket server too.
    runs = [run for run in fanout.get("runs", []) if run.get("transport", "unix") == "unix"]
    if not runs:
        return [DEFAULT_LOAD]
    largest = max(run["followers"] for run in runs)
    return [
        (largest, max(1, round(run["mean_message_bytes"])))
        for run in runs
        if run["followers"] == largest
    ]


def _run_one(settings: Settings, streams: int, size: int, directory: Path) -> dict[str, Any]:
    directory.mkdir(parents=True)
    socket = directory / "sock"
    address = f"unix:{socket}"
    timeout = settings.duration + 120
    with ProcessSet() as processes:
        server = processes.spawn(
            python_module(
                "bench.ceiling", address, str(streams), str(size), str(settings.duration)
            ),
            stdout=open(directory / "server.json", "wb"),  # noqa: SIM115 - the child's
        )
        wait_until(lambda: socket.exists() or server.poll() is not None, 30, "the server")
        outs = follower.spawn(
            processes,
            address,
            [0] * streams,
            clients=settings.clients,
            directory=directory,
            timeout=timeout,
            flags=["--no-check-offsets"],
        )
        processes.wait_all(timeout)
    report = json.loads((directory / "server.json").read_text())
    received = follower.collect(outs)
    messages = sum(stream["messages"] for stream in received.streams)
    delivered = sum(stream["bytes"] for stream in received.streams)
    ends = [stream["ended"] for stream in received.streams if stream["ended"] is not None]
    elapsed = max(ends) - report["started"] if ends else float("nan")
    return {
        "streams": streams,
        "message_bytes": size,
        "complete_streams": len(ends),
        "elapsed_s": elapsed,
        "messages_per_s": messages / elapsed,
        "bytes_per_s": delivered / elapsed,
        "server_cpu_s": report["cpu"],
        "messages_per_server_cpu_s": messages / report["cpu"] if report["cpu"] else None,
        "follower_cpu_s": received.cpu,
    }


def tables(result: dict[str, Any]) -> list[Table]:
    rows = [
        (
            str(run["streams"]),
            number(run["message_bytes"], 0),
            number(run["messages_per_s"], 0),
            number(run["bytes_per_s"], 1, 1e-6),
            number(run["server_cpu_s"], 2),
            number(run["messages_per_server_cpu_s"], 0),
            number(run["follower_cpu_s"], 2),
        )
        for run in result["runs"]
    ]
    headers = (
        "streams",
        "bytes/msg",
        "msgs/s",
        "MB/s",
        "server CPU s",
        "msgs/CPU s",
        "client CPU s",
    )
    duration = result["settings"]["duration"]
    title = f"ceiling: minimal grpc.aio server, pre-encoded messages, {duration:g} s"
    return [Table(title, headers, rows, ("same follower processes as the fan-out",))]


# -- the server ----------------------------------------------------------------------------------
async def serve(address: str, streams: int, size: int, duration: float) -> dict[str, float]:
    payload = b"".join(line(time.time(), index) for index in range(size // 100 + 1))[:size]
    message = encode_chunk(0, payload)
    end = pb.SubscribeResponse(end=pb.End(state=pb.JOB_STATE_SUCCEEDED)).SerializeToString()
    loop = asyncio.get_running_loop()
    everyone = asyncio.Event()
    done = asyncio.Event()
    connected = finished = 0
    stop_at = 0.0

    async def subscribe(request: pb.SubscribeRequest, context: object) -> Any:
        nonlocal connected, finished, stop_at
        connected += 1
        if connected == streams:
            stop_at = loop.time() + duration
            everyone.set()
        await everyone.wait()
        try:
            while loop.time() < stop_at:
                yield message
            yield end
        finally:
            finished += 1
            if finished == streams:
                done.set()

    server = await start_subscribe_server(subscribe, address)
    await asyncio.wait_for(everyone.wait(), 120)
    started, cpu_before = time.time(), own_cpu()
    await asyncio.wait_for(done.wait(), duration + 120)
    cpu = own_cpu() - cpu_before
    await server.stop(1)
    return {"started": started, "cpu": cpu}


async def start_subscribe_server(
    subscribe: Callable[[pb.SubscribeRequest, object], AsyncIterator[bytes]], address: str
) -> grpc.aio.Server:
    """A bare grpc.aio server with only `Subscribe`, its messages already encoded, started."""
    handler = grpc.method_handlers_generic_handler(
        "tailhub.v1.TailhubService",
        {
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                subscribe,
                request_deserializer=pb.SubscribeRequest.FromString,
                response_serializer=None,
            )
        },
    )
    server = grpc.aio.server(
        options=[
            ("grpc.server.max_pending_requests", 100_000),
            ("grpc.server.max_pending_requests_hard_limit", 100_000),
            ("grpc.max_send_message_length", 8 * 1024 * 1024),
        ]
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(address)
    await server.start()
    return server


def own_cpu() -> float:
    """CPU seconds this process has used (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    address, streams, size, duration = sys.argv[1:5]
    print(json.dumps(asyncio.run(serve(address, int(streams), int(size), float(duration)))))
