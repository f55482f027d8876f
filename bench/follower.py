"""A client process holding many followers: `Subscribe` streams over one grpc.aio channel.

    python -m bench.follower ADDRESS --out RESULT.json --stream JOB[xCOUNT] ... [options]

Scenarios spread their followers over a few of these processes, as many independent
clients would be. Each stream counts what it receives; optionally it checks that offsets
are contiguous, digests the bytes (`--digest`: each stream hashes its own; `--exact`: the
same sha256, shared by the streams that got the same chunks, see `bench.chains`), and samples
each message: the write-to-receive latency of its oldest line (lines from `bench.writer` carry
their write time) and its byte range. Results go to a JSON file; samples, as raw arrays,
beside it (`.lat`, `.ranges`). `bench.sse_follower` does the same over the web view's SSE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import resource
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench.chains import Chains, Node
from bench.writer import LINE_BYTES, timestamp_at
from harness.processes import ProcessSet, python_module
from tailhub.client._servers import STREAMS_PER_CHANNEL
from tailhub.v1 import tailhub_pb2 as pb

SUBSCRIBE = "/tailhub.v1.TailhubService/Subscribe"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


@dataclass(frozen=True)
class Options:
    offset: int = 0
    follow: bool = True
    check_offsets: bool = True
    latency: bool = False
    digest: bool = False
    exact: bool = False
    # A TCP daemon with TLS: the CA to trust, and the token (from $TAILHUB_TOKEN).
    ca_file: Path | None = None
    token: str | None = None


@dataclass
class StreamResult:
    """What one follower received, and how its stream ended."""

    job: int
    bytes: int = 0
    messages: int = 0
    started: float = 0.0  # wall-clock time the call was made
    ended: float | None = None  # wall-clock time the `end` message arrived
    state: str = ""  # job state in the `end` message
    log_size: int = 0  # log size in the `end` message
    contiguous: bool = True
    sha256: str = ""
    error: str | None = None


def _varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index
        shift += 7


def parse_chunk(message: bytes) -> tuple[int, int, int] | None:
    """(offset, start, end) of the data in a serialized `SubscribeResponse{chunk}`, else None.

    Parsed by hand so that a follower never copies the data: at hundreds of MB/s a client
    process would otherwise spend its time copying what it only needs to count.
    """
    if not message or message[0] != 0x0A:  # field 1 (chunk), length-delimited
        return None
    end, index = _varint(message, 1)
    end += index
    offset = 0
    if index < end and message[index] == 0x08:  # Chunk.offset
        offset, index = _varint(message, index + 1)
    if index < end and message[index] == 0x12:  # Chunk.data
        _, index = _varint(message, index + 1)
    return offset, index, end


@dataclass
class Samples:
    """Per-message samples of all streams of a process, kept as raw arrays (they are many)."""

    latencies: array[float] = field(default_factory=lambda: array("d"))
    ranges: array[int] = field(default_factory=lambda: array("q"))  # offset, end, offset, ...

    def save(self, out: Path) -> None:
        with open(f"{out}.lat", "wb") as raw:
            self.latencies.tofile(raw)
        with open(f"{out}.ranges", "wb") as raw:
            self.ranges.tofile(raw)

    def load(self, out: Path) -> None:
        with open(f"{out}.lat", "rb") as raw:
            self.latencies.frombytes(raw.read())
        with open(f"{out}.ranges", "rb") as raw:
            self.ranges.frombytes(raw.read())

    def distinct_ranges(self) -> int:
        """How many different (offset, end) chunks were sent: what sharing could encode once."""
        ranges = self.ranges
        return len(set(zip(ranges[::2], ranges[1::2], strict=True)))


async def follow(
    channel: grpc.aio.Channel,
    result: StreamResult,
    options: Options,
    samples: Samples,
    exact: tuple[Chains, Node] | None = None,
) -> None:
    """One stream; with `exact`, the chains it digests through and its first node there."""
    subscribe = channel.unary_stream(
        SUBSCRIBE,
        request_serializer=pb.SubscribeRequest.SerializeToString,
        response_deserializer=None,  # raw bytes: see parse_chunk
    )
    digest = hashlib.sha256() if options.digest else None
    expected = options.offset
    result.started = time.time()
    call = subscribe(
        pb.SubscribeRequest(job_id=result.job, offset=options.offset, follow=options.follow),
        wait_for_ready=True,
        metadata=(("authorization", f"Bearer {options.token}"),) if options.token else None,
    )
    try:
        async for message in call:
            chunk = parse_chunk(message)
            if chunk is not None:
                offset, start, end = chunk
                result.messages += 1
                result.bytes += end - start
                if options.check_offsets:
                    if offset != expected:
                        result.contiguous = False
                    expected = offset + end - start
                if exact is not None:
                    link = exact[0].step(exact[1], offset, message, start, end)
                    exact = (exact[0], link.child)
                    written = link.written
                else:
                    written = timestamp_at(message, start + -offset % LINE_BYTES, end)
                if options.latency:
                    if written is not None:
                        samples.latencies.append(time.time() - written)
                    samples.ranges.extend((offset, offset + end - start))
                if digest is not None:
                    digest.update(memoryview(message)[start:end])
                continue
            decoded = pb.SubscribeResponse.FromString(message)
            if decoded.WhichOneof("message") == "end":
                result.ended = time.time()
                result.state = pb.JobState.Name(decoded.end.state)
                result.log_size = decoded.end.log_size
                break
    except grpc.aio.AioRpcError as error:
        result.error = f"{error.code().name}: {error.details()}"
    except asyncio.CancelledError:
        result.error = "timed out"
        raise
    finally:
        call.cancel()  # an abandoned call must be cancelled explicitly (grpc#43462)
        if digest is not None:
            result.sha256 = digest.hexdigest()
        elif exact is not None:
            result.sha256 = exact[1].hexdigest()


async def follow_all(
    address: str, jobs: list[int], options: Options, timeout: float
) -> tuple[list[StreamResult], Samples]:
    results = [StreamResult(job) for job in jobs]
    samples = Samples()
    chains = {job: Chains(bytes) for job in jobs}
    starts = [(chains[job], chains[job].start()) if options.exact else None for job in jobs]
    # Over TCP, a connection carries at most 32 streams (the daemon's cap against rapid reset):
    # more channels, each a connection of its own, as the CLI opens (client/_servers.py).
    per_channel = len(jobs) if options.ca_file is None else STREAMS_PER_CHANNEL
    async with contextlib.AsyncExitStack() as stack:
        channels = [
            await stack.enter_async_context(_channel(address, options))
            for index in range(max(1, -(-len(jobs) // per_channel)))
        ]
        tasks = [
            asyncio.create_task(
                follow(channels[index // per_channel], result, options, samples, start)
            )
            for index, (result, start) in enumerate(zip(results, starts, strict=True))
        ]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results, samples


def _channel(address: str, options: Options) -> grpc.aio.Channel:
    if options.ca_file is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(options.ca_file.read_bytes())
    # A subchannel pool of its own: channels with the same options would share a connection.
    every = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    return grpc.aio.secure_channel(address, credentials, options=every)


def parse_streams(specs: list[str]) -> list[int]:
    """`7` is one follower of job 7; `7x250` is 250 of them."""
    jobs: list[int] = []
    for spec in specs:
        job, _, count = spec.partition("x")
        jobs.extend([int(job)] * int(count or 1))
    return jobs


# -- the scenario's side ---------------------------------------------------------------------
@dataclass
class Followers:
    """What every follower process reported."""

    streams: list[dict[str, Any]]
    samples: Samples
    cpu: float  # CPU seconds of the follower processes
    failed_processes: int


def spawn(
    processes: ProcessSet,
    address: str,
    jobs: list[int],
    *,
    clients: int,
    directory: Path,
    timeout: float,
    flags: Sequence[str] = (),
    env: dict[str, str] | None = None,
    module: str = "bench.follower",
) -> list[Path]:
    """Starts `clients` processes that share the followers of `jobs` (one stream per entry):
    `module` is this one (gRPC) or `bench.sse_follower` (the web view's SSE)."""
    directory.mkdir(parents=True, exist_ok=True)
    outs = []
    for index in range(min(clients, len(jobs))):
        share = jobs[index::clients]
        streams = [f"--stream={job}x{len(list(group))}" for job, group in itertools.groupby(share)]
        out = directory / f"follower-{index}.json"
        argv = python_module(
            module, address, f"--out={out}", f"--timeout={timeout}", *flags, *streams
        )
        with open(directory / f"follower-{index}.err", "wb") as errors:
            processes.spawn(argv, stderr=errors, env=env)
        outs.append(out)
    return outs


def collect(outs: list[Path]) -> Followers:
    """Reads what the follower processes wrote (once they have exited)."""
    streams: list[dict[str, Any]] = []
    samples = Samples()
    cpu = 0.0
    failed = 0
    for out in outs:
        if not out.exists():
            failed += 1
            continue
        report = json.loads(out.read_text())
        streams.extend(report["streams"])
        cpu += report["cpu"]
        samples.load(out)
    return Followers(streams, samples, cpu, failed)


def write_report(out: Path, results: list[StreamResult], samples: Samples) -> None:
    """What a follower process hands back: its streams, its latency samples, its CPU."""
    samples.save(out)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "cpu": usage.ru_utime + usage.ru_stime,
        "streams": [asdict(result) for result in results],
    }
    out.write_text(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stream", action="append", required=True, metavar="JOB[xCOUNT]")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--no-follow", dest="follow", action="store_false")
    parser.add_argument("--no-check-offsets", dest="check_offsets", action="store_false")
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--digest", action="store_true")
    parser.add_argument("--exact", action="store_true", help="--digest, shared (bench.chains)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--ca-file", type=Path, help="TLS to ADDRESS (HOST:PORT); token in env")
    args = parser.parse_args()
    options = Options(
        args.offset,
        args.follow,
        args.check_offsets,
        args.latency,
        args.digest,
        args.exact,
        args.ca_file,
        os.environ.get("TAILHUB_TOKEN") or None,
    )
    results, samples = asyncio.run(
        follow_all(args.address, parse_streams(args.stream), options, args.timeout)
    )
    write_report(args.out, results, samples)


if __name__ == "__main__":
    main()
