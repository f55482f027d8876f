"""Scenario 1, fan-out: one job written at a fixed rate, followed by N followers at once.

The job is a local job (the daemon's own runner) running `bench.writer`: 100-byte lines
carrying their write time, flushed every 10 ms. Its followers are spread over a few grpc.aio
client processes and subscribe before the first byte is written; then the writer's gate opens.
The same loads run over TCP with TLS, and to the web view's Server-Sent Events
(`--http-listen`, `bench.sse_follower`: aiohttp connections, one per stream, as browser tabs).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import follower, sse_follower
from bench.measure import percentile
from bench.report import Table, number, percent
from harness.daemon_process import DaemonProcess
from harness.ports import free_port
from harness.processes import REPO, ProcessSet
from harness.waiting import wait_until
from tailhub.client import Client
from tailhub.client._servers import STREAMS_PER_CHANNEL

MB = 1_000_000
VIA = {"unix": "Unix", "tls": "TCP+TLS", "sse": "SSE"}


@dataclass(frozen=True)
class Settings:
    # (followers, bytes per second written); the load is 1 MB/s, the last run shows
    # how N=1000 fares when the aggregate is 100 MB/s rather than 1 GB/s.
    loads: tuple[tuple[int, float], ...] = (
        (1, MB),
        (10, MB),
        (100, MB),
        (1000, MB),
        (1000, MB / 10),
    )
    # The same over TCP with TLS and a read token (the daemon's --listen on 127.0.0.1).
    tls_loads: tuple[tuple[int, float], ...] = ((1000, MB),)
    # The same to the web view's SSE streams (its --http-listen on 127.0.0.1), as browser tabs
    # follow a job: beside the Unix socket's row of the same shape.
    sse_loads: tuple[tuple[int, float], ...] = ((1000, MB / 10),)
    # Followers check every byte against the log (sha256, shared: bench.chains) where the
    # aggregate sent is at most this; above it (1 GB/s), byte counts and offsets only.
    exact_max_bytes_per_s: float = 100 * MB
    duration: float = 10.0  # seconds of writing
    clients: int = 4  # follower processes
    profile_dir: Path | None = None  # py-spy the daemon during the first run at the largest N


FULL = Settings()
QUICK = Settings(
    loads=((10, MB),),
    tls_loads=((10, MB),),
    sse_loads=((10, MB),),
    duration=1.0,
    clients=2,
)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    counts = [count for count, _ in settings.loads]
    profiled = counts.index(max(counts))
    runs = [
        run_one(
            settings,
            count,
            rate,
            scratch / f"f{index}",
            settings.profile_dir if index == profiled else None,
        )
        for index, (count, rate) in enumerate(settings.loads)
    ]
    runs += [
        run_one(settings, count, rate, scratch / f"t{index}", None, via="tls")
        for index, (count, rate) in enumerate(settings.tls_loads)
    ]
    runs += [
        run_one(settings, count, rate, scratch / f"s{index}", None, via="sse")
        for index, (count, rate) in enumerate(settings.sse_loads)
    ]
    return {"status": "ok", "settings": asdict(settings), "runs": runs}


def run_one(
    settings: Settings,
    count: int,
    rate: float,
    directory: Path,
    profile: Path | None,
    daemon_args: tuple[str, ...] = (),
    *,
    via: str = "unix",
) -> dict[str, Any]:
    """One load: `via` the Unix socket, "tls" (TCP+TLS with a read token) or "sse" (the web
    view's event streams)."""
    directory.mkdir(parents=True)
    remote = _Remote.make(directory / "h", count) if via == "tls" else None
    web = _Web.make(count) if via == "sse" else None
    exact = via == "sse" or count * rate <= settings.exact_max_bytes_per_s
    gate = directory / "gate"
    os.mkfifo(gate)
    writer = (
        f"exec {shlex.quote(sys.executable)} -m bench.writer -"
        f" --rate {rate} --duration {settings.duration} --gate {shlex.quote(str(gate))}"
    )
    timeout = settings.duration + 120
    daemon_args = (
        *daemon_args,
        *(remote.daemon_args if remote else []),
        *(web.daemon_args if web else []),
    )
    prefix = () if profile is None else py_spy_prefix(profile / f"fanout-{count}")
    daemon = DaemonProcess(directory / "h", list(daemon_args), prefix=prefix)
    with daemon, ProcessSet() as processes, daemon.client() as client:
        job = client.launch(writer, name=f"fanout-{count}", workdir=str(REPO))
        rss_before = daemon.rss_bytes()
        if web is not None:
            outs = web.spawn(processes, client, [job.id] * count, settings, directory, timeout)
        else:
            outs = follower.spawn(
                processes,
                remote.address if remote else daemon.address,
                [job.id] * count,
                clients=settings.clients,
                directory=directory,
                timeout=timeout,
                flags=[
                    "--latency",
                    *(["--exact"] if exact else []),
                    *(remote.follower_flags if remote else []),
                ],
                env=remote.follower_env if remote else None,
            )
        wait_until(lambda: client.get(job.id).subscribers >= count, 120, f"{count} subscribers")
        rss_streams = daemon.rss_bytes()
        cpu_before = daemon.cpu()
        opened = time.time()
        open_gate(gate)
        processes.wait_all(timeout)
        cpu = daemon.cpu() - cpu_before
        peak_rss = daemon.peak_rss()
        info = client.get(job.id)
        log = daemon.paths.job_log(job.id).read_bytes() if exact else None
    received = follower.collect(outs)
    log_sha256 = None if log is None else hashlib.sha256(log).hexdigest()
    figures = summary(count, info.log_size, info.upstream_connections, opened, received, log_sha256)
    return figures | {
        "transport": via,
        "rate_bytes_per_s": rate,
        "daemon_cpu_s": cpu.own,
        "daemon_peak_rss_bytes": peak_rss,
        # Resident memory with the job alone, then with every follower subscribed (idle).
        "daemon_rss_before_bytes": rss_before,
        "daemon_rss_streams_bytes": rss_streams,
    }


@dataclass(frozen=True)
class _Remote:
    """A daemon's TLS listener on 127.0.0.1 and what its followers need: the CA, a read token."""

    address: str
    daemon_args: list[str]
    follower_flags: list[str]
    follower_env: dict[str, str]

    @classmethod
    def make(cls, home: Path, streams: int) -> _Remote:
        from tailhub.client._tls_init import tls_init
        from tailhub.daemon.tokens import Role, create_token

        files = tls_init(home, ["localhost", "127.0.0.1"])
        token, _ = create_token(home, Role.READ, "bench")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{probe.getsockname()[1]}"
        return cls(
            address,
            [
                *("--listen", address),
                *("--tls-cert", str(files.server_cert), "--tls-key", str(files.server_key)),
                *("--max-streams-per-token", str(max(streams, 1000))),
                # Every follower on one address, each connection carrying STREAMS_PER_CHANNEL.
                *("--max-connections-per-peer", str(streams // STREAMS_PER_CHANNEL + 16)),
            ],
            [f"--ca-file={files.ca_cert}"],
            dict(os.environ, TAILHUB_TOKEN=token),
        )


@dataclass(frozen=True)
class _Web:
    """The daemon's web view on 127.0.0.1, open to every stream of one login at once."""

    base: str
    daemon_args: list[str]

    @classmethod
    def make(cls, streams: int) -> _Web:
        address = f"127.0.0.1:{free_port()}"
        return cls(
            f"http://{address}",
            [
                *("--http-listen", address),
                *("--http-max-streams", str(max(streams, 1000))),
                *("--http-max-streams-per-session", str(max(streams, 1))),
                # One connection per stream, all from 127.0.0.1 (and the login's).
                *("--http-max-connections", str(max(streams + 16, 1024))),
                *("--http-max-connections-per-peer", str(streams + 16)),
            ],
        )

    def spawn(
        self,
        processes: ProcessSet,
        client: Client,
        jobs: list[int],
        settings: Settings,
        directory: Path,
        timeout: float,
    ) -> list[Path]:
        """Logs in as a browser does (`tailhub web`'s link), then starts the SSE clients."""
        cookie = sse_follower.log_in(client)
        return follower.spawn(
            processes,
            self.base,
            jobs,
            clients=settings.clients,
            directory=directory,
            timeout=timeout,
            env=dict(os.environ, **{sse_follower.SESSION_ENV: cookie}),
            module="bench.sse_follower",
        )


def open_gate(gate: Path) -> None:
    """Opens and closes the writer's FIFO, which starts it; waits for it to be listening."""

    def opened() -> bool:
        try:
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: the writer has not opened its end yet
            return False
        return True

    wait_until(opened, 60, "the writer to wait at its gate")


def py_spy_prefix(out: Path) -> tuple[str, ...]:
    """Runs the daemon under py-spy, native frames included (grpc's core is C/Cython).

    As its child, not attached by pid: attaching needs ptrace rights some sandboxes deny.
    Output: collapsed stacks, one `frame;frame;... count` line per stack, in `out`.txt, for
    flamegraph.pl or speedscope. Sampling pauses the daemon 100 times a second: figures of
    this run suffer.
    """
    py_spy = Path(sys.executable).parent / "py-spy"
    out.parent.mkdir(parents=True, exist_ok=True)
    return (
        *(str(py_spy), "record", "--native", "--threads"),
        *("--format", "raw", "--output", f"{out}.txt", "--"),
    )


def summary(
    count: int,
    log_size: int,
    upstreams: int,
    opened: float,
    received: follower.Followers,
    log_sha256: str | None = None,
) -> dict[str, Any]:
    """The figures of one load; with `log_sha256`, how many followers got exactly the log."""
    streams = received.streams
    delivered = sum(stream["bytes"] for stream in streams)
    messages = sum(stream["messages"] for stream in streams)
    complete = sum(
        stream["bytes"] == log_size
        and stream["contiguous"]
        and stream["state"] == "JOB_STATE_SUCCEEDED"
        for stream in streams
    )
    ends = [stream["ended"] for stream in streams if stream["ended"] is not None]
    elapsed = (max(ends) if ends else time.time()) - opened
    latencies = sorted(received.samples.latencies)
    return {
        "followers": count,
        "log_bytes": log_size,
        "delivered_share": delivered / (count * log_size) if log_size else 0.0,
        "complete_followers": complete,
        "exact_followers": None
        if log_sha256 is None
        else sum(
            stream["sha256"] == log_sha256 and stream["contiguous"] and stream["bytes"] == log_size
            for stream in streams
        ),
        "errors": sorted({stream["error"] for stream in streams if stream["error"]}),
        "upstream_connections": upstreams,
        "elapsed_s": elapsed,
        "messages": messages,
        "messages_per_s": messages / elapsed,
        "bytes_per_s": delivered / elapsed,
        "mean_message_bytes": delivered / messages if messages else 0.0,
        "distinct_chunks": received.samples.distinct_ranges(),
        "latency_samples": len(latencies),
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p99_s": percentile(latencies, 0.99),
        "latency_max_s": latencies[-1] if latencies else None,
        "follower_cpu_s": received.cpu,
    }


def tables(result: dict[str, Any]) -> list[Table]:
    settings = result["settings"]
    rows = [
        (
            str(run["followers"]),
            VIA[run.get("transport", "unix")],
            number(run["rate_bytes_per_s"], 1, 1 / MB),
            percent(run["delivered_share"], 2),
            "-" if run.get("exact_followers") is None else f"{run['exact_followers']}",
            number(run["latency_p50_s"], 1, 1000),
            number(run["latency_p99_s"], 1, 1000),
            number(run["latency_max_s"], 1, 1000),
            number(run["daemon_cpu_s"], 2),
            percent(run["daemon_cpu_s"] / run["elapsed_s"], 0),
            number(run["daemon_peak_rss_bytes"], 0, 1 / 2**20),
            _per_stream_kib(run),
            number(run["messages_per_s"], 0),
            number(run["bytes_per_s"], 1, 1 / MB),
            number(run["mean_message_bytes"], 0),
            number(run["messages"] / max(1, run["distinct_chunks"]), 1),
            str(run["upstream_connections"]),
        )
        for run in result["runs"]
    ]
    headers = (
        "N",
        "via",
        "MB/s in",
        "delivered",
        "exact",
        "p50 ms",
        "p99 ms",
        "max ms",
        "daemon CPU s",
        "CPU",
        "peak RSS MiB",
        "KiB/stream",
        "msgs/s",
        "MB/s out",
        "bytes/msg",
        "msgs/chunk",
        "upstreams",
    )
    notes = (
        "latency: write time of the oldest line in each message to its receipt"
        " (an upper bound for the lines in it)",
        "msgs/chunk: messages per distinct (offset, end) range sent, the most that encoding"
        " each chunk once could share",
        f"followers spread over {settings['clients']} client processes (grpc.aio; asyncio for"
        " SSE) on the same 2-core machine",
        "via TCP+TLS: the daemon's --listen on 127.0.0.1 (tls-init certificate, ECDSA P-256),"
        " every follower with a read token; one TLS connection per client process",
        "via SSE: the web view (--http-listen 127.0.0.1), one HTTP/1.1 connection per stream"
        " (as a browser tab), one login; a message is a chunk event (JSON, base64; MB/s out"
        " counts the bytes it carries)",
        "exact: followers whose bytes hash to the log file's (sha256) with contiguous offsets;"
        f" '-': not checked (above {settings.get('exact_max_bytes_per_s', 0) / MB:g} MB/s out)",
        "KiB/stream: the daemon's resident memory with every follower subscribed and idle,"
        " less that before the first, per follower",
    )
    title = (
        f"fan-out: one local job writing 100-byte lines for {settings['duration']:g} s,"
        " N followers from offset 0"
    )
    return [Table(title, headers, rows, notes)]


def _per_stream_kib(run: dict[str, Any]) -> str:
    before, after = run.get("daemon_rss_before_bytes"), run.get("daemon_rss_streams_bytes")
    if before is None or after is None:
        return "-"
    return number((after - before) / run["followers"], 1, 1 / 1024)
