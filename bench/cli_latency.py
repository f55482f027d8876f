"""Scenario 5, the CLI's floor: what one `tailhub` command costs, next to what it stands on.

Against a running daemon: `tailhub jobs launch --async`, `tailhub jobs logs --no-follow` of a
small finished job, and `tailhub jobs logs --tail 100` (following, and with --no-follow) of a
finished 1 GiB log. Beside them, in the same rounds: `tail -n 100` of the daemon's copy of that
log, the interpreter starting (`python -c pass`), `python -c 'import grpc'`, `tailhub --help`,
and `--tail 100` started without deferring the imports no command uses (what the CLI cost
before client/_deferred.py). The commands take turns, round after round, so that a machine
busy with something else weighs on each alike. Each row also gives the CPU the command used
(a CPU cost per follower, too) and, where there is one, the same RPC from a process already
running: what the daemon itself takes.

The package's bytecode is compiled first, as an installed package's is: with
PYTHONDONTWRITEBYTECODE set (it is on some machines) every start would compile the CLI's source.

The CLI runs as users have it (issue 19, item 4): from a venv laid out as `pip install` of the
wheel leaves one (`installed_cli`): its own interpreter, pip's console script, the package on a
plain `.pth` line with no editable finder (the dev venv's editable install adds ~30 ms to every
start), the dependencies of the dev venv (bench/cli.py). The rows marked "(full CLI)" are the
same commands with TAILHUB_LEAN=0: the gRPC path every command took before the lean one.
"""

from __future__ import annotations

import compileall
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.catchup import MIB, write_log
from bench.cli import Timed, installed_cli, timed_run
from bench.measure import percentile
from bench.report import Table, number
from harness.daemon_process import DaemonProcess
from harness.processes import REPO
from harness.waiting import wait_until
from tailhub.client import Client, LogEnd


@dataclass(frozen=True)
class Settings:
    runs: int = 30
    floor_runs: int = 10
    log_size: int = 1 << 30


FULL = Settings()
QUICK = Settings(runs=2, floor_runs=1, log_size=32 * MIB)

TASK = "name: bench-small\nrun: echo hello from a small job\n"
# The lean path's rows, and the same commands over gRPC (full CLI): what a follower costs.
FOLLOW_ROW = "tailhub jobs logs (a follower's start, small job)"
LAUNCH_ROW = "tailhub jobs launch (sync, small job)"
FULL_CLI = " (full CLI)"
# The CLI as it started before its unused imports were deferred: cli.main, not the entry point.
_UNDEFERRED = "from tailhub.client.cli import main; main()"


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    scratch.mkdir(parents=True)
    for package in ("client", "daemon", "proto"):
        compileall.compile_dir(REPO / package, quiet=1)
    venv = installed_cli(scratch / "venv")
    python = str(venv / "bin" / "python")
    task = scratch / "task.yaml"
    task.write_text(TASK)
    big_source = scratch / "big.log"
    write_log(big_source, settings.log_size)

    def tailhub(*args: str) -> list[str]:
        return [str(venv / "bin" / "tailhub"), *args]

    def full(*args: str) -> list[str]:
        return [str(venv / "bin" / "tailhub-full"), *args]

    with DaemonProcess(scratch / "h") as daemon, daemon.client() as client:
        home = daemon.home
        first = _check(timed_run(tailhub("jobs", "launch", "--async", str(task)), home), "launch")
        small = int(first.stdout)
        big = _stored_log(client, big_source, settings.log_size)
        wait_until(lambda: client.get(small).sealed, 60, f"job {small} to finish")
        stored = str(daemon.paths.job_log(big))
        commands = {
            "tailhub jobs launch --async": tailhub("jobs", "launch", "--async", str(task)),
            LAUNCH_ROW: tailhub("jobs", "launch", str(task)),
            LAUNCH_ROW + FULL_CLI: full("jobs", "launch", str(task)),
            FOLLOW_ROW: tailhub("jobs", "logs", str(small)),
            FOLLOW_ROW + FULL_CLI: full("jobs", "logs", str(small)),
            "tailhub jobs logs --no-follow (small job)": tailhub(
                "jobs", "logs", "--no-follow", str(small)
            ),
            "tailhub jobs logs --tail 100 (1 GiB)": tailhub(
                "jobs", "logs", "--tail", "100", str(big)
            ),
            "tailhub jobs logs --tail 100 --no-follow (1 GiB)": tailhub(
                "jobs", "logs", "--tail", "100", "--no-follow", str(big)
            ),
            "tail -n 100 (the daemon's copy)": ["tail", "-n", "100", stored],
            "python -c pass": [python, "-c", "pass"],
            "python -c 'import grpc'": [python, "-c", "import grpc"],
            "tailhub --help": tailhub("--help"),
            "--tail 100 without deferred imports": [
                python,
                "-c",
                _UNDEFERRED,
                "jobs",
                "logs",
                "--tail",
                "100",
                str(big),
            ],
        }
        floors = {"python -c pass", "python -c 'import grpc'", "tailhub --help"}
        timings = _rounds(commands, home, settings, floors)
        tail_out = timed_run(commands["tailhub jobs logs --tail 100 (1 GiB)"], home).stdout
        expected = timed_run(commands["tail -n 100 (the daemon's copy)"]).stdout
        same = _same_output(commands, home)
        rpc = {
            "tailhub jobs launch --async": _rpc_times(
                lambda: client.launch("echo hello", name="rpc"), settings.runs
            ),
            "tailhub jobs logs --no-follow (small job)": _rpc_times(
                lambda: _read_log(client, small, None), settings.runs
            ),
            "tailhub jobs logs --tail 100 (1 GiB)": _rpc_times(
                lambda: _read_log(client, big, 100), settings.runs
            ),
        }
    return {
        "status": "ok",
        "settings": asdict(settings),
        "cli": "an installed layout (bench/cli.py installed_cli), pip's console script",
        "commands": {
            label: {**_summary(timings[label]), "rpc_p50_s": _p50(rpc.get(label))}
            for label in commands
        },
        "tail_correct": tail_out == expected and len(expected.splitlines()) == 100,
        "lean_output_identical": same,
        # Kept for readers of earlier results: the same figures under their old names.
        "launch_async": _summary(timings["tailhub jobs launch --async"]),
        "logs_no_follow": _summary(timings["tailhub jobs logs --no-follow (small job)"]),
    }


def _same_output(commands: dict[str, list[str]], home: Path) -> bool:
    """The lean path and the full CLI print the same bytes, and exit alike (a follower)."""
    lean = timed_run(commands[FOLLOW_ROW], home)
    full = timed_run(commands[FOLLOW_ROW + FULL_CLI], home)
    return (lean.returncode, lean.stdout, lean.stderr) == (
        full.returncode,
        full.stdout,
        full.stderr,
    )


def _rounds(
    commands: dict[str, list[str]], home: Path, settings: Settings, floors: set[str]
) -> dict[str, list[Timed]]:
    """Every command once per round (the floor ones in the first `floor_runs` rounds only),
    after one warm-up round."""
    timings: dict[str, list[Timed]] = {label: [] for label in commands}
    for round_ in range(settings.runs + 1):
        for label, argv in commands.items():
            if label in floors and round_ > settings.floor_runs:
                continue
            timed = _check(timed_run(argv, home), label)
            if round_:
                timings[label].append(timed)
    return timings


def _stored_log(client: Client, source: Path, size: int) -> int:
    """A finished, sealed job whose log is `source` (stored by the daemon in full)."""
    job = client.attach_file(str(source), name="big")
    wait_until(lambda: client.get(job.id).log_size >= size, 600, "the log to be stored")
    client.finish(job.id, 0)
    wait_until(lambda: client.get(job.id).sealed, 60, "the log to be sealed")
    return job.id


def _check(timed: Timed, what: str) -> Timed:
    if timed.returncode != 0:
        raise RuntimeError(f"{what} exited with {timed.returncode}: {timed.stderr[-500:]!r}")
    return timed


def _read_log(client: Client, job_id: int, tail: int | None) -> None:
    for item in client.follow(job_id, tail_lines=tail, follow=False):
        if isinstance(item, LogEnd):
            return


def _rpc_times(call: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def _p50(values: list[float] | None) -> float | None:
    return percentile(sorted(values), 0.5) if values else None


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
    rows = [
        (
            label,
            str(summary["runs"]),
            number(summary["wall_p50_s"], 0, 1000),
            number(summary["wall_max_s"], 0, 1000),
            number(summary["cpu_p50_s"], 0, 1000),
            number(summary["rpc_p50_s"], 2, 1000),
        )
        for label, summary in result["commands"].items()
    ]
    size = result["settings"]["log_size"] / MIB
    headers = ("command", "runs", "p50 ms", "max ms", "CPU p50 ms", "same RPC in-process ms")
    notes = (
        "taking turns round after round, against one running daemon; bytecode compiled",
        f"1 GiB: a finished log of {size:,.0f} MiB; --tail output "
        + ("matches" if result["tail_correct"] else "DIFFERS FROM")
        + " `tail -n 100`",
        "the last rows are the floor and the CLI as it started before (no deferred imports)",
        "the CLI as installed from the wheel (a venv of its own, pip's console script); "
        "(full CLI): the same command with TAILHUB_LEAN=0, over gRPC; lean and full output "
        + ("identical" if result.get("lean_output_identical") else "DIFFER"),
    )
    return [Table("CLI latency against a running daemon", headers, rows, notes)]
