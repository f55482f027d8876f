"""Scenario 2, many launches with logs over ssh: direct ssh per follower against tailhub.

K remote "jobs" (log files on this machine, written by one `bench.writer` for a fixed time and
ending with a marker line) reached through a real sshd on 127.0.0.1 with its default limits
(MaxStartups 10:30:100). Each job has F followers.

- direct: every follower runs its own `ssh host 'tail -n +1 -f LOG | sed -u "/MARKER/q"'`.
- tailhub: the daemon runs that same command once per job (a command job, attached through the
  API); the followers subscribe to the jobs, from a few grpc.aio client processes.

The remote command exits after the marker in both modes, so every follower has an end.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import follower
from bench.daemon import Daemon
from bench.measure import CpuTimes
from bench.processes import ProcessSet, python_module
from bench.report import Table, number
from bench.sshd import Sshd, SshdUnavailable
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
    timeout: float = 120.0  # beyond the duration, for every follower to finish


FULL = Settings()
QUICK = None  # needs sshd: not part of the quick smoke run


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    try:
        with Sshd(scratch / "sshd") as sshd:
            runs = [
                _run_one(
                    settings, sshd, jobs, followers, mode, scratch / f"{mode}-{jobs}-{followers}"
                )
                for jobs in settings.jobs
                for followers in settings.followers
                for mode in ("direct", "tailhub")
            ]
    except SshdUnavailable as error:
        return {"status": f"skipped: {error}"}
    # sshd is not a descendant of the benchmark: tell the caller its CPU was ours too.
    external = sum(run["sshd_cpu_s"] for run in runs)
    return {"status": "ok", "settings": asdict(settings), "runs": runs, "external_cpu_s": external}


def _remote(log: Path) -> str:
    return f"tail -n +1 -f {shlex.quote(str(log))} | sed -u '/{MARKER}/q'"


def _run_one(
    settings: Settings, sshd: Sshd, jobs: int, followers: int, mode: str, directory: Path
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
    follow = _direct if mode == "direct" else _tailhub
    with ProcessSet() as processes:
        outcome = follow(sshd, logs, followers, processes, directory, timeout, writer)
        processes.wait_all(timeout)
    sshd_log = sshd.log_since(log_position)
    digests = [hashlib.sha256(log.read_bytes()).hexdigest() for log in logs]
    outcome = _judge(outcome, digests, followers)
    total = sum(
        outcome.get(part, 0.0)
        for part in ("followers_cpu_s", "sshd_cpu_s", "daemon_cpu_s", "daemon_commands_cpu_s")
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
    out = directory / "out"
    out.mkdir()
    commands: list[dict[str, Any]] = [
        {
            "argv": sshd.argv(_remote(log)),
            "stdout": str(out / f"{job}-{index}.out"),
            "stderr": str(out / f"{job}-{index}.err"),
        }
        for job, log in enumerate(logs)
        for index in range(followers)
    ]
    spec, result = directory / "fleet.json", directory / "fleet-result.json"
    spec.write_text(json.dumps({"timeout": timeout, "commands": commands}))
    sshd_before = sshd.cpu()
    started = time.time()
    processes.spawn(writer)
    fleet = processes.spawn(python_module("bench.fleet", str(spec), str(result)))
    fleet.wait(timeout + 30)
    sshd.settle()
    sshd_cpu = (sshd.cpu() - sshd_before).total
    report = json.loads(result.read_text())
    received = []
    for command, ended in zip(commands, report["results"], strict=True):
        data = Path(command["stdout"]).read_bytes()
        received.append(
            {
                "job": int(Path(command["stdout"]).stem.split("-")[0]),
                "ok": ended.get("exit") == 0,
                "sha256": hashlib.sha256(data).hexdigest(),
                "ended": ended.get("ended"),
            }
        )
    return {
        "started": started,
        "received": received,
        "followers_cpu_s": sum(ended.get("cpu", 0.0) for ended in report["results"]),
        "sshd_cpu_s": sshd_cpu,
    }


def _tailhub(
    sshd: Sshd,
    logs: list[Path],
    followers: int,
    processes: ProcessSet,
    directory: Path,
    timeout: float,
    writer: list[str],
) -> dict[str, Any]:
    """One command job per log; the followers subscribe to it."""
    with Daemon(directory / "h") as daemon, daemon.client() as client:
        sshd_before, daemon_before = sshd.cpu(), daemon.cpu()
        started = time.time()
        processes.spawn(writer)
        # ssh's own messages (a reset connection) are events, not part of the remote log.
        jobs = [
            client.attach_command(sshd.argv(_remote(log)), stderr_events=True).id for log in logs
        ]
        outs = follower.spawn(
            processes,
            daemon.address,
            [job for job in jobs for _ in range(followers)],
            clients=min(len(jobs) * followers, 4),
            directory=directory,
            timeout=timeout,
            flags=["--digest"],
        )
        processes.wait_all(timeout)
        infos = [client.get(job) for job in jobs]
        daemon_cpu: CpuTimes = daemon.cpu() - daemon_before
        sshd.settle()
        sshd_cpu = (sshd.cpu() - sshd_before).total
    collected = follower.collect(outs)
    streams = collected.streams
    index_of = {job: index for index, job in enumerate(jobs)}
    received = [
        {
            "job": index_of[stream["job"]],
            "ok": stream["state"] == "JOB_STATE_SUCCEEDED" and not stream["error"],
            "sha256": stream["sha256"],
            "ended": stream["ended"],
        }
        for stream in streams
    ]
    return {
        "started": started,
        "received": received,
        "followers_cpu_s": collected.cpu,
        "daemon_cpu_s": daemon_cpu.own,
        "daemon_commands_cpu_s": daemon_cpu.children,  # its ssh processes
        "sshd_cpu_s": sshd_cpu,
        "upstream_connections": sum(info.upstream_connections for info in infos),
        "reconnected": [info.upstream_connections > 1 for info in infos],
        "failed_jobs": sum(info.state is not JobState.SUCCEEDED for info in infos),
    }


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
    )
    notes = (
        "sessions: `Accepted publickey` in sshd's log; throttled: dropped past MaxStartups",
        "failed: followers without every byte of their job; bad jobs: jobs whose followers were"
        " told it succeeded but got other bytes (in brackets: of them, jobs that reconnected)",
        "wall: from the jobs' start until every follower had every byte (never: some did not);"
        " wall ok: until the last complete follower had",
        "CPU: followers (ssh clients, or follower processes) + sshd and its sessions + the daemon"
        " + its ssh commands; the writer is left out (the same in both modes)",
        f"each job writes {settings['rate'] / 1000:g} kB/s for {settings['duration']:g} s,"
        " then a marker line; tailhub attaches its jobs through the API, not the CLI",
    )
    return [Table("many launches, logs over ssh: direct against tailhub", headers, rows, notes)]
