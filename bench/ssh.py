"""Scenario 2, many launches with logs over ssh: direct ssh per follower against tailhub.

K remote "jobs" (log files on this machine, written by one `bench.writer` for a fixed time and
ending with a marker line) reached through a real sshd on 127.0.0.1. Each job has F followers.

- direct: every follower runs its own `ssh host 'tail -n +1 -f LOG | sed -u "/MARKER/q"'`,
  against sshd with its default limits (MaxStartups 10:30:100): sshd drops most of a burst
  of connections, and a dropped follower costs almost nothing.
- direct-open: the same against an sshd whose MaxStartups lets every connection start: what
  direct costs when every follower gets its log (the fair reference).
- tailhub: the daemon runs that same command once per job (a command job, attached through the
  API); the followers subscribe to the jobs, from a few grpc.aio client processes. The jobs'
  ssh commands share one connection to the host (sources/ssh_share.py): the master's CPU (a
  process of its own session, not the daemon's child) is read before the daemon stops, and
  sshd's after, once the daemon has ended the master.
- tailhub-cli: the same jobs, each follower its own `tailhub jobs logs ID` (a program per
  follower, as direct's ssh is), for the F in `Settings.cli_followers`; the CLI as installed
  from the wheel (bench/cli.py installed_cli), so its lean path (client/_lean.py).

Both tailhub modes run against the open sshd (the daemon starts at most 8 commands at once).

The remote command exits after the marker in both modes, so every follower has an end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import follower
from bench.cli import installed_cli
from bench.report import Table, number
from bench.sshd import Sshd, SshdUnavailable
from harness.daemon_process import DaemonProcess
from harness.processes import ProcessSet, python_module
from harness.readings import CpuTimes, cpu_times
from tailhub.client import JobState

MARKER = "TAILHUB-BENCH-END-OF-LOG"
_ACCEPTED = re.compile(r"^Accepted publickey", re.MULTILINE)
_THROTTLED = re.compile(r"past MaxStartups", re.MULTILINE)


@dataclass(frozen=True)
class Settings:
    jobs: tuple[int, ...] = (30, 100)
    followers: tuple[int, ...] = (1, 4)
    duration: float = 10.0  # seconds each remote job writes
    rate: float = 10_000  # bytes per second per job
    clients: int = 4  # follower processes in tailhub mode
    # Beyond the duration, for every follower to finish: 400 ssh sessions starting at once on a
    # busy 2-core machine took up to 175 s (direct-open).
    timeout: float = 300.0
    # tailhub-cli runs at these F only. (Over gRPC, 400 CLIs at once needed ~15 GB of memory;
    # the lean path's are ~9 MB each: issue 19, item 4.)
    cli_followers: tuple[int, ...] = (1, 4)
    modes: tuple[str, ...] = ("direct", "direct-open", "tailhub", "tailhub-cli")


FULL = Settings()
QUICK = None  # needs sshd: not part of the quick smoke run
# Connections sshd lets start at once in direct-open (every follower's, with room to spare).
OPEN_MAX_STARTUPS = "10000"


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    # tailhub-cli's followers run the CLI as installed from the wheel (bench/cli_latency.py).
    cli = str(installed_cli(scratch / "venv") / "bin" / "tailhub")
    try:
        with (
            Sshd(scratch / "sshd") as throttling,
            Sshd(scratch / "sshd-open", OPEN_MAX_STARTUPS) as sshd_open,
        ):
            runs = [
                _run_one(
                    settings,
                    throttling if mode == "direct" else sshd_open,
                    jobs,
                    followers,
                    mode,
                    scratch / f"{mode}-{jobs}-{followers}",
                    cli,
                )
                for jobs in settings.jobs
                for followers in settings.followers
                for mode in settings.modes
                if mode != "tailhub-cli" or followers in settings.cli_followers
            ]
    except SshdUnavailable as error:
        return {"status": f"skipped: {error}"}
    # sshd is not a descendant of the benchmark: tell the caller its CPU was ours too.
    external = sum(run["sshd_cpu_s"] for run in runs)
    return {"status": "ok", "settings": asdict(settings), "runs": runs, "external_cpu_s": external}


def _remote(log: Path) -> str:
    return f"tail -n +1 -f {shlex.quote(str(log))} | sed -u '/{MARKER}/q'"


def _run_one(
    settings: Settings,
    sshd: Sshd,
    jobs: int,
    followers: int,
    mode: str,
    directory: Path,
    cli: str,
) -> dict[str, Any]:
    logs = [directory / "logs" / f"job-{index}.log" for index in range(jobs)]
    logs[0].parent.mkdir(parents=True)
    for log in logs:
        log.touch()
    writer = python_module(
        "bench.writer",
        *map(str, logs),
        f"--rate={settings.rate}",
        f"--duration={settings.duration}",
        "--interval=0.1",
        f"--marker={MARKER}",
    )
    timeout = settings.duration + settings.timeout
    sshd.settle()  # nothing of the previous run may count in this one
    log_position = sshd.log_size()
    with ProcessSet() as processes:
        if mode.startswith("direct"):
            outcome = _direct(sshd, logs, followers, processes, directory, timeout, writer)
        else:
            outcome = _tailhub(
                sshd,
                logs,
                followers,
                processes,
                directory,
                timeout,
                writer,
                cli if mode == "tailhub-cli" else None,
            )
        processes.wait_all(timeout)
    sshd_log = sshd.log_since(log_position)
    digests = [hashlib.sha256(log.read_bytes()).hexdigest() for log in logs]
    outcome = _judge(outcome, digests, followers)
    total = sum(
        outcome.get(part, 0.0)
        for part in (
            "followers_cpu_s",
            "sshd_cpu_s",
            "daemon_cpu_s",
            "daemon_commands_cpu_s",
            "ssh_masters_cpu_s",
        )
    )
    return {
        "mode": mode,
        "jobs": jobs,
        "followers_per_job": followers,
        "ssh_sessions": len(_ACCEPTED.findall(sshd_log)),
        "throttled": len(_THROTTLED.findall(sshd_log)),
        "total_cpu_s": total,
        **outcome,
    }


def _direct(
    sshd: Sshd,
    logs: list[Path],
    followers: int,
    processes: ProcessSet,
    directory: Path,
    timeout: float,
    writer: list[str],
) -> dict[str, Any]:
    """Every follower its own ssh, all started at once by a fleet process."""
    sshd_before = sshd.cpu()
    started = time.time()
    processes.spawn(writer)
    fleet = _Fleet([sshd.argv(_remote(log)) for log in logs], followers, directory)
    received, cpu = fleet.run(processes, timeout)
    sshd.settle()
    sshd_cpu = (sshd.cpu() - sshd_before).total
    return {
        "started": started,
        "received": received,
        "followers_cpu_s": cpu,
        "sshd_cpu_s": sshd_cpu,
    }


class _Fleet:
    """One command per follower (`argvs[job]`, F times), all started at once by `bench.fleet`.

    A follower got its log when its command exited with 0; its output is what it received.
    """

    def __init__(self, argvs: list[list[str]], followers: int, directory: Path) -> None:
        out = directory / "out"
        out.mkdir()
        self.commands: list[dict[str, Any]] = [
            {
                "argv": argv,
                "stdout": str(out / f"{job}-{index}.out"),
                "stderr": str(out / f"{job}-{index}.err"),
            }
            for job, argv in enumerate(argvs)
            for index in range(followers)
        ]
        self.spec, self.result = directory / "fleet.json", directory / "fleet-result.json"

    def run(self, processes: ProcessSet, timeout: float) -> tuple[list[dict[str, Any]], float]:
        """(what each follower received, the followers' CPU) once every one has ended."""
        self.spec.write_text(json.dumps({"timeout": timeout, "commands": self.commands}))
        fleet = processes.spawn(python_module("bench.fleet", str(self.spec), str(self.result)))
        fleet.wait(timeout + 30)
        report = json.loads(self.result.read_text())
        received = []
        for command, ended in zip(self.commands, report["results"], strict=True):
            data = Path(command["stdout"]).read_bytes()
            received.append(
                {
                    "job": int(Path(command["stdout"]).stem.split("-")[0]),
                    "ok": ended.get("exit") == 0,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "ended": ended.get("ended"),
                }
            )
        return received, sum(ended.get("cpu", 0.0) for ended in report["results"])


def _tailhub(
    sshd: Sshd,
    logs: list[Path],
    followers: int,
    processes: ProcessSet,
    directory: Path,
    timeout: float,
    writer: list[str],
    cli: str | None,
) -> dict[str, Any]:
    """One command job per log; the followers subscribe to it (or each runs the CLI `cli`)."""
    with DaemonProcess(directory / "h") as daemon, daemon.client() as client:
        sshd_before, daemon_before = sshd.cpu(), daemon.cpu()
        started = time.time()
        processes.spawn(writer)
        # ssh's own messages (a reset connection) are events, not part of the remote log.
        jobs = [
            client.attach_command(sshd.argv(_remote(log)), stderr_events=True).id for log in logs
        ]
        if cli is not None:
            home = str(daemon.home)
            argvs = [[cli, "jobs", "logs", "--home", home, str(job)] for job in jobs]
            received, followers_cpu = _Fleet(argvs, followers, directory).run(processes, timeout)
        else:
            received, followers_cpu = _subscribe(
                processes, daemon.address, jobs, followers, directory, timeout
            )
        processes.wait_all(timeout)
        infos = [client.get(job) for job in jobs]
        daemon_cpu: CpuTimes = daemon.cpu() - daemon_before
        masters_cpu = _masters_cpu(daemon.pid)
    # The daemon's stop ended the shared connection: its sshd session is over.
    sshd.settle()
    sshd_cpu = (sshd.cpu() - sshd_before).total
    return {
        "started": started,
        "received": received,
        "followers_cpu_s": followers_cpu,
        "daemon_cpu_s": daemon_cpu.own,
        "daemon_commands_cpu_s": daemon_cpu.children,  # its ssh processes
        "ssh_masters_cpu_s": masters_cpu,
        "sshd_cpu_s": sshd_cpu,
        "upstream_connections": sum(info.upstream_connections for info in infos),
        "reconnected": [info.upstream_connections > 1 for info in infos],
        "failed_jobs": sum(info.state is not JobState.SUCCEEDED for info in infos),
    }


def _masters_cpu(daemon_pid: int) -> float:
    """CPU of the ssh masters the daemon started (`ssh -M`, control sockets in its directory)."""
    total = 0.0
    marker = f"/proc/{daemon_pid}/fd/".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if argv[0] == b"ssh" and b"-M" in argv and any(marker in word for word in argv):
                total += cpu_times(int(entry)).total
        except (OSError, ValueError):
            continue
    return total


def _subscribe(
    processes: ProcessSet,
    address: str,
    jobs: list[int],
    followers: int,
    directory: Path,
    timeout: float,
) -> tuple[list[dict[str, Any]], float]:
    """F streams per job from a few grpc.aio follower processes; what each got, their CPU."""
    outs = follower.spawn(
        processes,
        address,
        [job for job in jobs for _ in range(followers)],
        clients=min(len(jobs) * followers, 4),
        directory=directory,
        timeout=timeout,
        flags=["--digest"],
    )
    processes.wait_all(timeout)
    collected = follower.collect(outs)
    index_of = {job: index for index, job in enumerate(jobs)}
    received = [
        {
            "job": index_of[stream["job"]],
            "ok": stream["state"] == "JOB_STATE_SUCCEEDED" and not stream["error"],
            "sha256": stream["sha256"],
            "ended": stream["ended"],
        }
        for stream in collected.streams
    ]
    return received, collected.cpu


def _judge(outcome: dict[str, Any], digests: list[str], followers: int) -> dict[str, Any]:
    """Which followers got every byte of their job's log, and when the last of them did."""
    received = outcome.pop("received")
    started = outcome.pop("started")
    complete = [item for item in received if item["ok"] and item["sha256"] == digests[item["job"]]]
    everyone = len(complete) == len(received) == len(digests) * followers
    # Followers told the job succeeded, yet given bytes that differ from the log file.
    wrong = {item["job"] for item in received if item["ok"]} - {item["job"] for item in complete}
    reconnected = outcome.pop("reconnected", [False] * len(digests))
    return {
        **outcome,
        "jobs_with_wrong_bytes": len(wrong),
        "of_which_reconnected": sum(reconnected[job] for job in wrong),
        "followers": len(received),
        "complete_followers": len(complete),
        "failed_followers": len(received) - len(complete),
        "complete_share": len(complete) / len(received) if received else 0.0,
        "wall_s": max(item["ended"] for item in complete) - started if everyone else None,
        "wall_of_complete_s": (
            max(item["ended"] for item in complete) - started if complete else None
        ),
    }


def tables(result: dict[str, Any]) -> list[Table]:
    settings = result["settings"]
    rows = [
        (
            run["mode"],
            str(run["jobs"]),
            str(run["followers_per_job"]),
            str(run["ssh_sessions"]),
            str(run["throttled"]),
            f"{run['failed_followers']}/{run['followers']}",
            f"{run['jobs_with_wrong_bytes']} ({run['of_which_reconnected']})",
            number(run["wall_s"], 1) if run["wall_s"] is not None else "never",
            number(run["wall_of_complete_s"], 1),
            number(run["total_cpu_s"], 1),
            number(run["followers_cpu_s"], 1),
            number(run["sshd_cpu_s"], 1),
            number(run.get("daemon_cpu_s"), 1),
            number(run.get("daemon_commands_cpu_s"), 1),
            number(run.get("ssh_masters_cpu_s"), 2),
        )
        for run in result["runs"]
    ]
    headers = (
        "mode",
        "K",
        "F",
        "sessions",
        "throttled",
        "failed",
        "bad jobs",
        "wall s",
        "wall ok s",
        "CPU s",
        "followers",
        "sshd",
        "daemon",
        "its ssh",
        "masters",
    )
    notes = (
        "sessions: `Accepted publickey` in sshd's log; throttled: dropped past MaxStartups",
        "failed: followers without every byte of their job; bad jobs: jobs whose followers were"
        " told it succeeded but got other bytes (in brackets: of them, jobs that reconnected)",
        "wall: from the jobs' start until every follower had every byte (never: some did not);"
        " wall ok: until the last complete follower had",
        "CPU: followers (ssh clients, or follower processes) + sshd and its sessions + the daemon"
        " + its ssh commands + their shared connection's master; the writer is left out (the"
        " same in both modes)",
        f"each job writes {settings['rate'] / 1000:g} kB/s for {settings['duration']:g} s,"
        " then a marker line; tailhub attaches its jobs through the API, not the CLI",
    )
    main = Table("many launches, logs over ssh: direct against tailhub", headers, rows, notes)
    return [main, _comparison(result["runs"])]


def _comparison(runs: list[dict[str, Any]]) -> Table:
    """tailhub's CPU against direct-open's at each K and F, and what one session or follower
    costs in each mode (the reason behind a ratio)."""
    rows = []
    for (jobs, followers), by_mode in sorted(_by_load(runs).items()):
        reference = by_mode.get("direct-open")
        for mode in ("tailhub", "tailhub-cli"):
            run = by_mode.get(mode)
            if run is None or reference is None:
                continue
            rows.append(
                (
                    mode,
                    str(jobs),
                    str(followers),
                    number(run["total_cpu_s"], 1),
                    number(reference["total_cpu_s"], 1),
                    number(run["total_cpu_s"] / reference["total_cpu_s"], 2),
                    number(_session_cpu(reference), 3),
                    number(_session_cpu(run), 3),
                    number(run["followers_cpu_s"] / run["followers"], 3),
                    number(run.get("daemon_cpu_s"), 1),
                )
            )
    headers = (
        "mode",
        "K",
        "F",
        "CPU s",
        "direct-open CPU s",
        "ratio",
        "direct s/session",
        "its s/session",
        "s/follower",
        "daemon s",
    )
    notes = (
        "targets: tailhub ratio <= 1/3 at K=100 F=4, <= 1 at F=1 (its followers: a few grpc.aio"
        " processes); tailhub-cli (one `tailhub jobs logs` each, installed) <= 0.25 at F=4,"
        " <= 0.8 at F=1 (issue 19, item 4)",
        "s/session: ssh client + sshd per ssh session (direct-open: every follower's; tailhub:"
        " the daemon's, one per job); s/follower: the followers' own CPU, per follower",
    )
    return Table(
        "ssh: tailhub's CPU against direct with every follower served", headers, rows, notes
    )


def _by_load(runs: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, dict[str, Any]]]:
    loads: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for run in runs:
        loads.setdefault((run["jobs"], run["followers_per_job"]), {})[run["mode"]] = run
    return loads


def _session_cpu(run: dict[str, Any]) -> float | None:
    """ssh client and sshd CPU per ssh session of `run`."""
    if not run["ssh_sessions"]:
        return None
    clients = float(run.get("daemon_commands_cpu_s", run["followers_cpu_s"]))
    return (clients + float(run["sshd_cpu_s"])) / int(run["ssh_sessions"])
