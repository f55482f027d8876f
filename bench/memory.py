"""Scenario, memory: N idle followers of one job, then all of them catching up at once.

The followers subscribe to a local job that has written nothing yet; the daemon's resident
memory is read then (what N idle streams cost). Then the job writes a burst in one go and
exits: every follower has the whole burst to catch up on at the same moment, the case where
memory grew with followers x chunk size before the in-flight budget. Each load runs with the
daemon's default budget, and may run again with the budget lifted (`off`: 8 GiB, in effect
none) to show what it bounds. The budget's own figures come from the daemon's log.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import follower
from bench.fanout import open_gate
from bench.report import Table, number
from harness.daemon_process import DaemonProcess
from harness.processes import REPO, ProcessSet
from harness.readings import rss_bytes
from harness.waiting import wait_until

MB = 1_000_000
MIB = 1 << 20
NO_BUDGET = 8 << 30
_BUDGET_LINE = re.compile(
    r"subscriber budget: peak (\d+) of (\d+) bytes in flight; (\d+) chunks, (\d+) shrunk,"
    r" (\d+) waited ([\d.]+) s in all; (\d+) overdrafts"
)


@dataclass(frozen=True)
class Settings:
    # (followers, burst bytes, budget bytes or None for the daemon's default)
    loads: tuple[tuple[int, int, int | None], ...] = (
        (1000, 8 * MB, None),
        (1000, 8 * MB, NO_BUDGET),
        (10_000, 1 * MB, None),
    )
    clients: int = 4
    timeout: float = 300.0


FULL = Settings()
QUICK = Settings(loads=((100, 1 * MB, None), (100, 1 * MB, 256 * 1024)), clients=2, timeout=60)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    runs = [
        _run_one(settings, count, burst, budget, scratch / f"m{index}")
        for index, (count, burst, budget) in enumerate(settings.loads)
    ]
    return {"status": "ok", "settings": asdict(settings), "runs": runs}


def _run_one(
    settings: Settings, count: int, burst: int, budget: int | None, directory: Path
) -> dict[str, Any]:
    directory.mkdir(parents=True)
    gate = directory / "gate"
    os.mkfifo(gate)
    # One write of the whole burst (the writer writes what is due every 10 ms).
    writer = (
        f"exec {shlex.quote(sys.executable)} -m bench.writer -"
        f" --rate {burst * 100} --duration 0.01 --gate {shlex.quote(str(gate))}"
    )
    args = [] if budget is None else ["--subscriber-budget", str(budget)]
    daemon = DaemonProcess(directory / "h", args)
    with daemon, ProcessSet() as processes, daemon.client() as client:
        rss_empty = rss_bytes(daemon.pid)
        job = client.launch(writer, name=f"memory-{count}", workdir=str(REPO))
        outs = follower.spawn(
            processes,
            daemon.address,
            [job.id] * count,
            clients=settings.clients,
            directory=directory,
            timeout=settings.timeout,
        )
        wait_until(lambda: client.get(job.id).subscribers >= count, 120, f"{count} subscribers")
        rss_idle = rss_bytes(daemon.pid)
        cpu_before = daemon.cpu()
        opened = time.time()
        open_gate(gate)
        processes.wait_all(settings.timeout)
        elapsed = time.time() - opened
        cpu = daemon.cpu() - cpu_before
        peak_rss = daemon.peak_rss()
        log_size = client.get(job.id).log_size
    streams = follower.collect(outs).streams
    complete = sum(
        stream["bytes"] == log_size and stream["contiguous"] and not stream["error"]
        for stream in streams
    )
    return {
        "followers": count,
        "burst_bytes": log_size,
        "budget_bytes": budget,
        "complete_followers": complete,
        "elapsed_s": elapsed,
        "daemon_cpu_s": cpu.own,
        "daemon_rss_empty_bytes": rss_empty,
        "daemon_rss_idle_bytes": rss_idle,
        "daemon_peak_rss_bytes": peak_rss,
        "budget": budget_figures(daemon.log_path.read_text(errors="replace")),
    }


def budget_figures(log: str) -> dict[str, float] | None:
    """The budget line a daemon logs when it stops (the last one in `log`)."""
    found = _BUDGET_LINE.findall(log)
    if not found:
        return None
    peak, limit, grants, shrunk, waits, wait_s, overdrafts = found[-1]
    return {
        "limit_bytes": int(limit),
        "peak_in_flight_bytes": int(peak),
        "chunks": int(grants),
        "shrunk": int(shrunk),
        "waits": int(waits),
        "wait_s": float(wait_s),
        "overdrafts": int(overdrafts),
    }


def tables(result: dict[str, Any]) -> list[Table]:
    rows = []
    for run in result["runs"]:
        budget = run["budget"] or {}
        limit = budget.get("limit_bytes")
        rows.append(
            (
                f"{run['followers']:,}",
                number(run["burst_bytes"], 0, 1 / MB),
                "off" if run["budget_bytes"] == NO_BUDGET else number(limit, 1, 1 / MIB),
                f"{run['complete_followers']}/{run['followers']}",
                number(run["elapsed_s"], 1),
                number(run["daemon_cpu_s"], 1),
                number(run["daemon_rss_idle_bytes"], 0, 1 / MIB),
                number(run["daemon_peak_rss_bytes"], 0, 1 / MIB),
                number(budget.get("peak_in_flight_bytes"), 1, 1 / MIB),
                number(budget.get("shrunk"), 0),
                number(budget.get("waits"), 0),
                number(budget.get("wait_s"), 1),
                number(budget.get("overdrafts"), 0),
            )
        )
    headers = (
        "N",
        "burst MB",
        "budget MiB",
        "complete",
        "catch-up s",
        "daemon CPU s",
        "idle RSS MiB",
        "peak RSS MiB",
        "peak in flight MiB",
        "chunks shrunk",
        "waits",
        "waited s",
        "overdrafts",
    )
    notes = (
        "N followers subscribe to a job that has written nothing (idle RSS), then it writes"
        " the burst at once and exits; every follower catches up on it at the same moment",
        "in flight: chunks read and encoded for a subscriber, not yet taken by gRPC (the"
        " daemon's figures); waits and waited s summed over all followers; overdrafts:"
        " small chunks beyond a budget held by followers that stopped reading",
        f"targets: peak RSS <= 150 MB at N = 1,000 and <= 400 MB at N = 10,000;"
        f" followers spread over {result['settings']['clients']} client processes",
    )
    return [Table("memory: idle followers, then all catching up at once", headers, rows, notes)]
