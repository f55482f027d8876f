"""Scenario 3, catch-up and tail: a 1 GiB finished log, read from its start and from its end.

The log is a file job the daemon has stored in full and sealed. Against it: one follower from
offset 0, many followers from offset 0 at once, and `tailhub jobs logs --tail 100`; beside
them `cat FILE > /dev/null` and `tail -n 100 FILE` on the daemon's own copy of the log, the
physical reference (page cache warm in every case).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import follower
from bench.cli import tailhub, timed_run
from bench.measure import percentile
from bench.report import Table, number
from harness.daemon_process import DaemonProcess
from harness.processes import ProcessSet
from harness.waiting import wait_until
from tailhub.client import Client, LogChunk

MIB = 1 << 20
MB = 1_000_000


@dataclass(frozen=True)
class Settings:
    size: int = 1 << 30
    followers: int = 100
    clients: int = 4
    tail_runs: int = 10
    timeout: float = 300.0  # for each batch of followers


FULL = Settings()
QUICK = Settings(size=32 * MIB, followers=10, clients=2, tail_runs=3, timeout=60.0)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    scratch.mkdir(parents=True)
    source = scratch / "big.log"
    write_log(source, settings.size)
    with DaemonProcess(scratch / "h") as daemon, daemon.client() as client:
        started = time.perf_counter()
        job = client.attach_file(str(source), name="catch-up")
        wait_until(
            lambda: client.get(job.id).log_size >= settings.size, 600, "the log to be stored"
        )
        ingest_s = time.perf_counter() - started
        client.finish(job.id, 0)
        wait_until(lambda: client.get(job.id).sealed, 60, "the log to be sealed")
        stored = daemon.paths.job_log(job.id)
        reference = {
            "cat_s": min(_timed([["cat", str(stored)]]) for _ in range(3)),
            "tail_s": _p50([_timed([["tail", "-n", "100", str(stored)]]) for _ in range(5)]),
        }
        single = _follow(daemon, job.id, 1, 1, settings, scratch / "one")
        many = _follow(
            daemon, job.id, settings.followers, settings.clients, settings, scratch / "many"
        )
        tail = _tail(daemon, client, job.id, stored, settings.tail_runs)
    return {
        "status": "ok",
        "settings": asdict(settings),
        "log_bytes": settings.size,
        "ingest_s": ingest_s,
        "reference": reference,
        "single": single,
        "many": many,
        "tail": tail,
    }


def write_log(path: Path, size: int) -> None:
    """`size` bytes of 100-byte numbered lines, written as one repeated 1 MiB block."""
    lines = b"".join(b"%099d\n" % number for number in range(MIB // 100 + 1))
    block = lines[: MIB - 1] + b"\n"
    with open(path, "wb") as out:
        for _ in range(size // MIB):
            out.write(block)
        out.write(block[: size % MIB])


def _timed(commands: list[list[str]]) -> float:
    started = time.perf_counter()
    for argv in commands:
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def _p50(values: list[float]) -> float:
    return percentile(sorted(values), 0.5)


def _follow(
    daemon: DaemonProcess,
    job_id: int,
    count: int,
    clients: int,
    settings: Settings,
    directory: Path,
) -> dict[str, Any]:
    """`count` followers from offset 0 at once; MB/s from the first call to the last end."""
    cpu_before = daemon.cpu()
    with ProcessSet() as processes:
        outs = follower.spawn(
            processes,
            daemon.address,
            [job_id] * count,
            clients=clients,
            directory=directory,
            timeout=settings.timeout,
        )
        processes.wait_all(settings.timeout + 60)
    cpu = daemon.cpu() - cpu_before
    streams = follower.collect(outs).streams
    received = sum(stream["bytes"] for stream in streams)
    ends = [stream["ended"] for stream in streams if stream["ended"] is not None]
    first = min((stream["started"] for stream in streams), default=0.0)
    elapsed = (max(ends) if ends else time.time()) - first
    complete = sum(
        stream["bytes"] == settings.size and stream["contiguous"] and not stream["error"]
        for stream in streams
    )
    return {
        "followers": count,
        "complete_followers": complete,
        "elapsed_s": elapsed,
        "bytes_per_s": received / elapsed,
        "daemon_cpu_s": cpu.own,
        "daemon_peak_rss_bytes": daemon.peak_rss(),
    }


def _tail(
    daemon: DaemonProcess, client: Client, job_id: int, stored: Path, runs: int
) -> dict[str, Any]:
    tail = subprocess.run(["tail", "-n", "100", str(stored)], capture_output=True, check=True)
    expected = tail.stdout
    argv = tailhub("jobs", "logs", str(job_id), "--tail", "100")
    cli = [timed_run(argv, daemon.home) for _ in range(runs + 1)][1:]  # the first warms up
    rpc = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        data = b"".join(
            item.data
            for item in client.follow(job_id, tail_lines=100, follow=False)
            if isinstance(item, LogChunk)
        )
        rpc.append(time.perf_counter() - started)
    return {
        "cli_p50_s": _p50([timed.wall_s for timed in cli]),
        "cli_cpu_p50_s": _p50([timed.cpu_s for timed in cli]),
        "cli_correct": all(timed.stdout == expected and timed.returncode == 0 for timed in cli),
        "rpc_p50_s": _p50(rpc[1:]),
        "rpc_correct": data == expected,
    }


def tables(result: dict[str, Any]) -> list[Table]:
    size_mb = result["log_bytes"] / MB
    reference, single, many, tail = (
        result["reference"],
        result["single"],
        result["many"],
        result["tail"],
    )

    def follow_row(label: str, run: dict[str, Any]) -> tuple[str, ...]:
        return (
            label,
            number(run["bytes_per_s"], 0, 1 / MB),
            number(run["elapsed_s"] * 1000, 0),
            f"{run['complete_followers']}/{run['followers']}",
            number(run["daemon_cpu_s"], 2),
            number(run["daemon_peak_rss_bytes"], 0, 1 / MIB),
        )

    rows = [
        (
            "cat FILE > /dev/null",
            number(size_mb / reference["cat_s"], 0),
            number(reference["cat_s"], 0, 1000),
            "-",
            "-",
            "-",
        ),
        follow_row("1 follower from offset 0", single),
        follow_row(f"{many['followers']} followers from offset 0 (aggregate)", many),
        ("tail -n 100 FILE", "-", number(reference["tail_s"], 1, 1000), "-", "-", "-"),
        (
            "tailhub jobs logs --tail 100 (CLI)",
            "-",
            number(tail["cli_p50_s"], 1, 1000),
            "ok" if tail["cli_correct"] else "WRONG",
            "-",
            "-",
        ),
        (
            "  the same Subscribe, in-process",
            "-",
            number(tail["rpc_p50_s"], 1, 1000),
            "ok" if tail["rpc_correct"] else "WRONG",
            "-",
            "-",
        ),
    ]
    headers = ("reading", "MB/s", "ms", "complete", "daemon CPU s", "daemon peak RSS MiB")
    notes = (
        f"stored first through a file job: {number(result['ingest_s'], 1)} s"
        f" ({number(size_mb / result['ingest_s'], 0)} MB/s)",
        "times: p50 of the runs (cat: best of 3); page cache warm",
    )
    return [Table(f"catch-up and tail: a finished {size_mb:,.0f} MB log", headers, rows, notes)]
