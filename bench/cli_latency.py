"""Scenario 5, CLI latency: `tailhub jobs launch --async` and `tailhub jobs logs --no-follow`.

Each is run one after another against a running daemon; the p50 of their wall time is what
a user waits. Beside them, the floor they stand on: the interpreter starting, importing grpc,
and the same RPCs from a process that is already running.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cli import Timed, tailhub, timed_run
from bench.daemon import Daemon
from bench.measure import percentile, wait_until
from bench.report import Table, number
from tailhub.client import LogEnd


@dataclass(frozen=True)
class Settings:
    runs: int = 30
    floor_runs: int = 10


FULL = Settings()
QUICK = Settings(runs=5, floor_runs=3)

TASK = "name: bench-small\nrun: echo hello from a small job\n"


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    scratch.mkdir(parents=True)
    task = scratch / "task.yaml"
    task.write_text(TASK)
    with Daemon(scratch / "h") as daemon, daemon.client() as client:
        home = daemon.home
        first = timed_run(tailhub("jobs", "launch", "--async", str(task)), home)  # warms caches
        _check(first, "launch --async")
        job_id = int(first.stdout)
        launches = [
            _check(timed_run(tailhub("jobs", "launch", "--async", str(task)), home), "launch")
            for _ in range(settings.runs)
        ]
        wait_until(lambda: client.get(job_id).sealed, 60, f"job {job_id} to finish")
        logs_argv = tailhub("jobs", "logs", str(job_id), "--no-follow")
        logs = [_check(timed_run(logs_argv, home), "logs") for _ in range(settings.runs + 1)][1:]
        rpc_launch = _rpc_times(lambda: client.launch("echo hello", name="rpc"), settings.runs)
        rpc_logs = _rpc_times(lambda: _read_log(client, job_id), settings.runs)
    floors = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import grpc'": [sys.executable, "-c", "import grpc"],
        "tailhub --help": tailhub("--help"),
    }
    floor = {
        label: _summary([timed_run(argv) for _ in range(settings.floor_runs)])
        for label, argv in floors.items()
    }
    return {
        "status": "ok",
        "settings": asdict(settings),
        "launch_async": _summary(launches),
        "logs_no_follow": _summary(logs),
        "rpc_launch_s": percentile(sorted(rpc_launch), 0.5),
        "rpc_logs_s": percentile(sorted(rpc_logs), 0.5),
        "floor": floor,
    }


def _check(timed: Timed, what: str) -> Timed:
    if timed.returncode != 0:
        raise RuntimeError(f"tailhub {what} exited with {timed.returncode}: {timed.stderr!r}")
    return timed


def _read_log(client: Any, job_id: int) -> None:
    for item in client.follow(job_id, follow=False):
        if isinstance(item, LogEnd):
            return


def _rpc_times(call: Any, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def _summary(runs: list[Timed]) -> dict[str, float]:
    walls = sorted(timed.wall_s for timed in runs)
    cpus = sorted(timed.cpu_s for timed in runs)
    return {
        "runs": len(runs),
        "wall_p50_s": percentile(walls, 0.5),
        "wall_max_s": walls[-1],
        "cpu_p50_s": percentile(cpus, 0.5),
    }


def tables(result: dict[str, Any]) -> list[Table]:
    def row(label: str, summary: dict[str, float], rpc: float | None = None) -> tuple[str, ...]:
        return (
            label,
            str(summary["runs"]),
            number(summary["wall_p50_s"], 0, 1000),
            number(summary["wall_max_s"], 0, 1000),
            number(summary["cpu_p50_s"], 0, 1000),
            number(rpc, 2, 1000),
        )

    rows = [
        row("tailhub jobs launch --async", result["launch_async"], result["rpc_launch_s"]),
        row("tailhub jobs logs --no-follow", result["logs_no_follow"], result["rpc_logs_s"]),
        *(row(label, summary) for label, summary in result["floor"].items()),
    ]
    headers = ("command", "runs", "p50 ms", "max ms", "CPU p50 ms", "same RPC in-process ms")
    notes = ("the last rows are the floor: interpreter start, grpc import, CLI without RPC",)
    return [Table("CLI latency against a running daemon", headers, rows, notes)]
