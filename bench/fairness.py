"""Scenario, fair shares: one client's unread streams beside another client's catch-up.

A daemon with a `--listen` port on 127.0.0.1 (plaintext, loopback) and two read tokens. The
log is a finished file job of `size` bytes. One follower with the token "reader" catches up
on it from offset 0, alone; then a client with the token "hog" opens `unread` streams of the
same job from offset 0 and never reads a message from any of them (`python -m bench.fairness
hog ADDRESS JOB COUNT`), and the reader catches up again beside them; then alone once more,
the hog gone. Figure: the reader's MiB/s beside the hog over its MiB/s alone (the mean of the
two alone runs, one on either side), in the same run. Target (issue 19, item 2): >= 70%.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench import follower
from bench.catchup import write_log
from bench.report import Table, number
from harness.daemon_process import DaemonProcess
from harness.processes import ProcessSet, python_module
from harness.waiting import wait_until
from tailhub.client._servers import STREAMS_PER_CHANNEL
from tailhub.v1 import tailhub_pb2 as pb

MIB = 1 << 20


@dataclass(frozen=True)
class Settings:
    size: int = 256 * MIB
    unread: int = 200
    timeout: float = 600.0


FULL = Settings()
QUICK = Settings(size=8 * MIB, unread=10, timeout=60.0)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    from tailhub.daemon.tokens import Role, create_token

    home = scratch / "h"
    home.mkdir(parents=True, mode=0o700)
    reader, _ = create_token(home, Role.READ, "reader")
    hog, _ = create_token(home, Role.READ, "hog")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    source = scratch / "big.log"
    write_log(source, settings.size)
    args = ["--listen", address, "--insecure", "--max-streams-per-token", str(settings.unread)]
    # One client on one address, as many connections as a connection's streams make it need.
    args += ["--max-connections-per-peer", str(settings.unread // STREAMS_PER_CHANNEL + 16)]
    with DaemonProcess(home, args) as daemon, daemon.client() as client, ProcessSet() as procs:
        job = client.attach_file(str(source), name="fairness")
        wait_until(lambda: client.get(job.id).log_size >= settings.size, 600, "the log stored")
        client.finish(job.id, 0)
        wait_until(lambda: client.get(job.id).sealed, 60, "the log to be sealed")
        alone = _catch_up(address, reader, job.id, settings, scratch / "alone")
        hogging = procs.spawn(
            python_module("bench.fairness", "hog", address, str(job.id), str(settings.unread)),
            env=dict(os.environ, TAILHUB_TOKEN=hog),
            stdout=subprocess.PIPE,
        )
        assert hogging.stdout is not None
        hogging.stdout.readline()  # every stream called
        wait_until(lambda: client.get(job.id).subscribers >= settings.unread, 60, "the hog")
        _settle(lambda: client.get(job.id).bytes_served, 120)
        held = client.get(job.id).bytes_served
        beside = _catch_up(address, reader, job.id, settings, scratch / "beside")
        hogging.send_signal(signal.SIGTERM)
        hogging.wait(30)
        wait_until(lambda: client.get(job.id).subscribers == 0, 60, "the hog's streams to end")
        again = _catch_up(address, reader, job.id, settings, scratch / "again")
    # Against the mean of the two alone (the machine's other load moves between them).
    alone_rate = (alone["bytes_per_s"] + again["bytes_per_s"]) / 2
    return {
        "status": "ok",
        "settings": asdict(settings),
        "alone": alone,
        "beside": beside,
        "alone_after": again,
        "unread_bytes_held": held,
        "share": beside["bytes_per_s"] / alone_rate if alone_rate else 0.0,
    }


def _settle(served: Callable[[], int], timeout: float) -> None:
    """Returns once `served` stays the same for a second: the unread streams hold what they
    were given, and nothing more goes out to them."""
    deadline = time.monotonic() + timeout
    last = served()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = served()
        if now == last:
            return
        last = now
    raise TimeoutError("the unread streams kept taking bytes")


def _catch_up(
    address: str, token: str, job_id: int, settings: Settings, directory: Path
) -> dict[str, Any]:
    """One follower of `job_id` from offset 0 to its end over the port, with `token`."""
    with ProcessSet() as processes:
        outs = follower.spawn(
            processes,
            address,
            [job_id],
            clients=1,
            directory=directory,
            timeout=settings.timeout,
            env=dict(os.environ, TAILHUB_TOKEN=token),
        )
        processes.wait_all(settings.timeout + 60)
    stream = follower.collect(outs).streams[0]
    elapsed = (stream["ended"] or time.time()) - stream["started"]
    return {
        "complete": stream["bytes"] == settings.size and stream["contiguous"],
        "error": stream["error"],
        "elapsed_s": elapsed,
        "bytes_per_s": stream["bytes"] / elapsed,
        "messages": stream["messages"],
        "mean_message_bytes": stream["bytes"] / max(1, stream["messages"]),
    }


async def _hog(address: str, job_id: int, count: int, token: str) -> None:
    """`count` streams of `job_id` that never read a message, until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    # Without bandwidth probing the windows stay at 64 KiB: the streams hold what they were
    # sent, as a client that stopped reading does (with it, grpc takes the log into the
    # client's buffers, and the streams keep the daemon busy instead).
    # A subchannel pool each, the CLI's streams per connection (a --listen connection
    # carries at most 32: daemon/listeners.py).
    options = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]
    metadata = (("authorization", f"Bearer {token}"),)
    async with contextlib.AsyncExitStack() as stack:
        calls = []
        for first in range(0, count, STREAMS_PER_CHANNEL):
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(address, options=options)
            )
            subscribe = channel.unary_stream(
                "/tailhub.v1.TailhubService/Subscribe",
                request_serializer=pb.SubscribeRequest.SerializeToString,
                response_deserializer=None,
            )
            calls += [
                subscribe(pb.SubscribeRequest(job_id=job_id, follow=True), metadata=metadata)
                for _ in range(min(STREAMS_PER_CHANNEL, count - first))
            ]
        # Sent once each call has its response headers: the daemon has them all.
        await asyncio.gather(*(call.initial_metadata() for call in calls))
        print("ready", flush=True)
        await stop.wait()
        for call in calls:
            call.cancel()


def tables(result: dict[str, Any]) -> list[Table]:
    settings = result["settings"]
    rows = [
        (
            name,
            "yes" if run["complete"] else f"no ({run['error']})",
            number(run["elapsed_s"], 2),
            number(run["bytes_per_s"], 1, 1 / MIB),
            number(run["mean_message_bytes"], 0),
        )
        for name, run in (
            ("alone", result["alone"]),
            (f"beside {settings['unread']} unread streams", result["beside"]),
            ("alone, after", result["alone_after"]),
        )
    ]
    notes = (
        f"one follower (read token 'reader') catches up on a finished {settings['size'] >> 20}"
        " MiB log over --listen 127.0.0.1 (plaintext); the unread streams are another read"
        " token's ('hog'), on one connection, from offset 0, never read",
        f"beside / the mean of the two alone: {result['share']:.0%} (target >= 70%)",
    )
    return [
        Table(
            "fair shares: a catch-up beside another client's unread streams",
            ("reader", "complete", "s", "MiB/s", "bytes/msg"),
            rows,
            notes,
        )
    ]


if __name__ == "__main__":
    if sys.argv[1:2] != ["hog"]:
        raise SystemExit("usage: python -m bench.fairness hog ADDRESS JOB COUNT")
    asyncio.run(_hog(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), os.environ["TAILHUB_TOKEN"]))
