"""Isolation: a follower that stops reading delays nobody, and costs the daemon no memory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

MIB = 1024 * 1024
LAG = 500 * MIB
BLOCK = 4 * MIB
RSS_GROWTH_LIMIT = 200 * MIB
# The stalled follower may have been sent what flow control let through before it stopped.
STALLED_MAY_RECEIVE = 16 * MIB


def _same_contents(left: Path, right: Path) -> bool:
    with left.open("rb") as a, right.open("rb") as b:
        while True:
            block = a.read(16 * MIB)
            if block != b.read(16 * MIB):
                return False
            if not block:
                return True


def test_a_follower_that_stops_reading_delays_nobody_and_costs_no_memory(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    log = workdir / "big.log"
    log.write_bytes(b"start\n")
    attached = run_cli(daemon.home, "jobs", "attach", "--file", str(log))
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)
    with daemon.client() as client, grpc.insecure_channel(daemon.paths.address) as channel:
        # Connected, subscribed, and never read from: the stream is started but not iterated.
        stalled = rpc.TailhubServiceStub(channel).Subscribe(
            pb.SubscribeRequest(job_id=job_id, follow=True)
        )
        reader = background_cli("jobs", "logs", str(job_id))
        received = reader.stdout_path
        try:
            wait_until(lambda: client.get(job_id).subscribers == 2, what="both followers")
            wait_until(lambda: received.stat().st_size == 6, what="the reader's first bytes")
            baseline_rss = peak_rss = daemon.rss_bytes()

            def sample_rss() -> None:
                nonlocal peak_rss
                peak_rss = max(peak_rss, daemon.rss_bytes())

            # The stalled follower falls 500 MiB behind, written in blocks as a busy job would.
            pattern = os.urandom(BLOCK)
            with log.open("ab") as handle:
                for block in range(LAG // BLOCK):
                    handle.write(b"block %d\n" % block + pattern)
                    handle.flush()
                    sample_rss()
            size = log.stat().st_size

            def reader_caught_up() -> bool:
                sample_rss()
                return received.stat().st_size == size

            wait_until(reader_caught_up, 120, "the reader to receive all 500 MiB")
            job = client.get(job_id)
            assert job.subscribers == 2
            stalled_got = job.bytes_served - size
            assert stalled_got < STALLED_MAY_RECEIVE, "the stalled follower was not stalled"

            # New bytes reach the reader promptly while the other follower is still stalled.
            appended_at = time.monotonic()
            with log.open("ab") as handle:
                handle.write(b"still here\n")
            wait_until(
                lambda: received.stat().st_size == size + 11, 5, "the reader to get new bytes"
            )
            latency = time.monotonic() - appended_at
            assert client.get(job_id).bytes_served - (size + 11) == stalled_got
            assert peak_rss - baseline_rss < RSS_GROWTH_LIMIT, (
                f"daemon RSS grew by {(peak_rss - baseline_rss) / MIB:.0f} MiB"
            )

            stalled.cancel()  # type: ignore[no-untyped-call]
            wait_until(lambda: client.get(job_id).subscribers == 1, what="the stalled one to go")
            finished = run_cli(daemon.home, "jobs", "finish", str(job_id))
            assert finished.returncode == 0, finished.stderr
            assert reader.wait() == 0, reader.stderr
        finally:
            stalled.cancel()  # type: ignore[no-untyped-call]
    assert _same_contents(received, log)
    print(
        f"stalled follower lagged {(size - stalled_got) / MIB:.0f} MiB; reader latency "
        f"{latency * 1000:.0f} ms; daemon RSS {baseline_rss / MIB:.0f} -> {peak_rss / MIB:.0f} MiB"
    )
