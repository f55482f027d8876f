"""What `--metrics-listen` costs the fan-out's hot path: server CPU per streamed message,
with and without the RPC-counting interceptor and the per-chunk counting, side by side.

    python -m bench.metrics_cost [--rounds 5] [--messages 40000] [--streams 4]

A grpc.aio server subprocess streams small pre-encoded messages (as Subscribe does at the live
edge) to this process; the server reports its own CPU time. Rounds alternate off/on, so a
loaded machine weighs on both alike; compare the two columns of one run, never across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

_PAYLOAD = b"x" * 200
_SERVICE = "bench.Metered"


async def _serve(variant: str, messages: int) -> None:
    import grpc
    import grpc.aio
    from prometheus_client import CollectorRegistry, Counter

    from tailhub.daemon.counts import DaemonCounts
    from tailhub.daemon.metrics import counting_interceptor

    counts = DaemonCounts()

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for _ in range(messages):
            if variant == "on":  # what service.subscribe adds per chunk
                counts.bytes_served += len(_PAYLOAD)
                counts.lag.observe(0)
            yield _PAYLOAD

    handler = grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "Stream": grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=None, response_serializer=None
            )
        },
    )
    rpcs = Counter("rpcs", "RPCs", ("service", "method", "code"), registry=CollectorRegistry())
    interceptors = []
    if variant == "on":  # as DaemonMetrics.interceptor() counts
        interceptors.append(
            counting_interceptor(
                lambda service, method, code: rpcs.labels(service, method, code.name).inc()
            )
        )
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    cpu = time.process_time()
    await loop.run_in_executor(None, sys.stdin.readline)  # "done"
    print(time.process_time() - cpu, flush=True)
    await server.stop(0)


async def _consume(port: int, streams: int, messages: int) -> None:
    import grpc.aio

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_stream(
            f"/{_SERVICE}/Stream", request_serializer=None, response_deserializer=None
        )

        async def one() -> int:
            received = 0
            async for _ in call(b""):
                received += 1
            return received

        received = await asyncio.gather(*(one() for _ in range(streams)))
    if sum(received) != streams * messages:
        raise RuntimeError(f"received {sum(received)} messages, not {streams * messages}")


def _round(variant: str, streams: int, messages: int) -> float:
    """Server CPU microseconds per message for one run."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.metrics_cost",
            "--serve",
            variant,
            "--messages",
            str(messages),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    try:
        port = int(server.stdout.readline())
        server.stdin.write("go\n")
        server.stdin.flush()
        asyncio.run(_consume(port, streams, messages))
        server.stdin.write("done\n")
        server.stdin.flush()
        cpu = float(server.stdout.readline())
    finally:
        server.wait(60)
    return cpu / (streams * messages) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=40_000, help="per stream")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--serve", choices=("off", "on"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.messages))
        return
    figures: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for variant in ("off", "on"):
            figures[variant].append(_round(variant, args.streams, args.messages))
    print("server CPU per message (us), rounds alternating:")
    for variant, values in figures.items():
        shown = " ".join(f"{value:6.1f}" for value in values)
        print(
            f"  metrics {variant:3}: {shown}   median {statistics.median(values):6.1f}"
            f"   mean {statistics.mean(values):6.1f}"
        )


if __name__ == "__main__":
    main()
