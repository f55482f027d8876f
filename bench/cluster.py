"""Scenario: cluster mode, several daemons on one Redis (issue 11).

Three `tailhubd --redis` daemons, each with its own state directory, share a `redis-server`
the scenario starts (AOF on). One command job (a replayable source: `bench.replayable`),
attached on the first daemon, is written at 1 MB/s; 1000 followers are spread evenly over the
three daemons' sockets. The same load on one daemon without Redis runs beside it. Then
`bench.failover` kills the lease holder ten times.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import failover, follower
from bench.failover import daemon_args
from bench.fanout import open_gate, summary
from bench.redis_server import INSTALL_HINT, available, cluster_redis, reading
from bench.replayable import Source, attach, get_job
from bench.report import Table, number, percent
from harness.daemon_process import DaemonProcess
from harness.processes import ProcessSet
from harness.waiting import wait_until

MB = 1_000_000


@dataclass(frozen=True)
class Settings:
    followers: int = 1000
    rate: float = MB  # bytes per second written
    duration: float = 10.0  # seconds of writing
    daemons: int = 3
    clients: int = 6  # follower processes in all (spread over the daemons in the cluster)
    kills: int = 10  # failover rounds
    lease_ms: int = 3000  # tailhubd --lease-ms (its default)


FULL = Settings()
QUICK = Settings(followers=12, duration=1.0, daemons=2, clients=2, kills=1, lease_ms=500)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    if not available():
        return {"status": f"skipped: no redis-server on this machine ({INSTALL_HINT})"}
    result: dict[str, Any] = {"settings": asdict(settings)}
    errors: list[str] = []
    phases: dict[str, Callable[[], dict[str, Any]]] = {
        "single": lambda: fan_out(settings, scratch / "single", cluster=False),
        "cluster": lambda: fan_out(settings, scratch / "cluster", cluster=True),
        "failover": lambda: failover.run(
            scratch / "failover",
            daemons=settings.daemons,
            kills=settings.kills,
            lease_ms=settings.lease_ms,
            rate=settings.rate,
        ),
    }
    # Each phase on its own: a failing one keeps the others' figures in the JSON.
    for name, phase in phases.items():
        try:
            result[name] = phase()
        except Exception as error:
            result[name] = {"error": f"{type(error).__name__}: {error}"}
            errors.append(f"{name}: {type(error).__name__}: {error}")
    result["status"] = "ok" if not errors else "error: " + "; ".join(errors)
    return result


def shares(total: int, parts: int) -> list[int]:
    """`total` split over `parts` as evenly as integers allow."""
    return [total // parts + (index < total % parts) for index in range(parts)]


def fan_out(settings: Settings, directory: Path, *, cluster: bool) -> dict[str, Any]:
    """The load on three daemons sharing a Redis, or on one daemon without Redis."""
    directory.mkdir(parents=True)
    gate = directory / "gate"
    os.mkfifo(gate)
    timeout = settings.duration + 120
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(cluster_redis(directory / "redis")) if cluster else None
        daemons = [
            DaemonProcess(
                directory / f"h{index}",
                daemon_args(redis, index, settings.lease_ms) if redis else [],
            )
            for index in range(settings.daemons if cluster else 1)
        ]
        for daemon in daemons:
            stack.enter_context(daemon)
        processes = stack.enter_context(ProcessSet())
        source = Source.start(processes, directory, settings.rate, settings.duration, gate)
        job = attach(daemons[0], source, "cluster-fanout")
        counts = shares(settings.followers, len(daemons))
        outs: list[Path] = []
        for index, (daemon, count) in enumerate(zip(daemons, counts, strict=True)):
            outs += follower.spawn(
                processes,
                daemon.address,
                [job] * count,
                clients=max(1, settings.clients // len(daemons)),
                directory=directory / f"followers-{index}",
                timeout=timeout,
                flags=["--latency", "--digest"],
            )
        # Whether a daemon counts its own subscribers or the cluster's, this holds once
        # every follower is in.
        wait_until(
            lambda: all(
                get_job(daemon.address, job).subscribers >= count
                for daemon, count in zip(daemons, counts, strict=True)
            ),
            120,
            f"{settings.followers} subscribers",
        )
        # The command waits for its first byte: its fetcher holds the lease already.
        holders = [get_job(daemon.address, job).lease_holder for daemon in daemons]
        cpu_before = [daemon.cpu().own for daemon in daemons]
        redis_before = reading(redis) if redis else None
        opened = time.time()
        open_gate(gate)
        processes.wait_all(timeout)
        daemon_cpu = [
            daemon.cpu().own - before for daemon, before in zip(daemons, cpu_before, strict=True)
        ]
        peak_rss = [daemon.peak_rss() for daemon in daemons]
        jobs = [get_job(daemon.address, job) for daemon in daemons]
        redis_after = reading(redis) if redis else None
    received = follower.collect(outs)
    written = source.digest()
    upstreams = [reported.upstream_connections for reported in jobs]
    figures = summary(settings.followers, source.size(), max(upstreams), opened, received)
    return figures | {
        "daemons": len(daemons),
        "exact_followers": sum(
            stream["sha256"] == written and stream["contiguous"] for stream in received.streams
        ),
        "failed_follower_processes": received.failed_processes,
        "upstreams_per_daemon": upstreams,
        "lease_holders": holders,  # as each daemon saw it while the job ran
        "log_size_per_daemon": [reported.log_size for reported in jobs],
        "daemon_cpu_s": sum(daemon_cpu),
        "daemon_cpu_s_each": daemon_cpu,
        "daemon_peak_rss_bytes": max(peak_rss),
        "daemon_peak_rss_bytes_each": peak_rss,
        "redis": None
        if redis_before is None or redis_after is None
        else {
            "cpu_s": redis_after.cpu_s - redis_before.cpu_s,
            "used_memory_bytes": redis_after.used_memory_bytes,
            "rss_bytes": redis_after.rss_bytes,
            "peak_rss_bytes": redis_after.peak_rss_bytes,
        },
    }


def tables(result: dict[str, Any]) -> list[Table]:
    settings = result["settings"]
    runs = [("1 daemon, no Redis", result["single"]), ("3 daemons + Redis", result["cluster"])]
    rows = [
        (
            label,
            str(run["followers"]),
            percent(run["delivered_share"], 2),
            f"{run['exact_followers']}/{run['followers']}",
            number(run["latency_p50_s"], 1, 1000),
            number(run["latency_p99_s"], 1, 1000),
            "/".join(str(count) for count in run["upstreams_per_daemon"]),
            ",".join(holder or "-" for holder in run["lease_holders"]),
            number(run["daemon_cpu_s"], 2),
            number(run["daemon_peak_rss_bytes"], 0, 1 / 2**20),
            number(run["redis"]["cpu_s"], 2) if run["redis"] else "-",
            number(run["redis"]["used_memory_bytes"], 1, 1 / 2**20) if run["redis"] else "-",
            number(run["redis"]["rss_bytes"], 1, 1 / 2**20) if run["redis"] else "-",
        )
        for label, run in runs
    ]
    headers = (
        "",
        "N",
        "delivered",
        "exact",
        "p50 ms",
        "p99 ms",
        "upstreams",
        "lease holder",
        "daemons CPU s",
        "peak RSS MiB",
        "Redis CPU s",
        "Redis used MiB",
        "Redis RSS MiB",
    )
    notes = (
        "exact: followers whose bytes hash to the file written (sha256) with contiguous offsets;"
        " hashing costs the followers' processes ~1 s of CPU per GB",
        "upstreams: Job.upstream_connections as each daemon reports it (cluster-wide: must be 1)",
        "daemons CPU: the daemons' own CPU, summed, while writing; peak RSS: the largest daemon's",
        "Redis: CPU of redis-server (AOF on) over the same time; used: INFO used_memory at the end",
        f"{settings['clients']} follower processes in all, spread over the daemons' sockets",
    )
    title = (
        f"cluster fan-out: one command job at {settings['rate'] / MB:g} MB/s for"
        f" {settings['duration']:g} s, N followers from offset 0"
    )
    return [Table(title, headers, rows, notes), *failover.tables(result["failover"], settings)]
