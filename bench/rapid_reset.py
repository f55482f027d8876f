"""Scenario, rapid reset: a client with no token floods a --listen port with HTTP/2 streams it
resets at once (bench/rapid_reset_client.py), while a read-token holder keeps calling
ListJobs on its own connection.

Figures: the daemon's peak RSS (VmHWM) over the attack and its RSS after it, the token
holder's call latency before and during the attack (p50, p99, failed calls), and how many
streams the attacker got to send. Targets (issue 16, item 4): RSS <= 200 MB and a
legitimate call's p50 <= 50 ms during the attack.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.measure import percentile
from bench.report import Table, number
from harness.daemon_process import DaemonProcess
from harness.processes import ProcessSet, python_module
from harness.readings import rss_bytes
from harness.waiting import wait_until
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

MIB = 1 << 20


@dataclass(frozen=True)
class Settings:
    connections: tuple[int, ...] = (4, 32)
    seconds: float = 15.0
    baseline_seconds: float = 2.0


FULL = Settings()
QUICK = Settings(connections=(4,), seconds=2.0, baseline_seconds=0.5)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    runs = [
        run_one(settings, connections, scratch / f"r{index}")
        for index, connections in enumerate(settings.connections)
    ]
    return {"status": "ok", "settings": asdict(settings), "runs": runs}


class _Caller:
    """A read-token holder calling ListJobs back to back on its own channel."""

    def __init__(self, address: str, token: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = rpc.TailhubServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)

    def ready(self) -> bool:
        try:
            self._stub.ListJobs(pb.ListJobsRequest(), metadata=self._metadata, timeout=1)
        except grpc.RpcError:
            return False
        return True

    def calls(self, seconds: float) -> tuple[list[float], dict[str, int]]:
        """Latencies of the calls that answered, and the status codes of those that did not."""
        latencies: list[float] = []
        failed: dict[str, int] = {}
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                self._stub.ListJobs(pb.ListJobsRequest(), metadata=self._metadata, timeout=10)
            except grpc.RpcError as error:
                failed[error.code().name] = failed.get(error.code().name, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)
        return sorted(latencies), failed

    def close(self) -> None:
        self._channel.close()


def run_one(settings: Settings, connections: int, directory: Path) -> dict[str, Any]:
    from tailhub.daemon.tokens import Role, create_token

    home = directory / "h"
    home.mkdir(parents=True, mode=0o700)
    token, _ = create_token(home, Role.READ, "bench")
    token_file = directory / "token"
    token_file.touch(mode=0o600)
    token_file.write_text(token)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    daemon = DaemonProcess(home, ["--listen", address, "--insecure"])
    with daemon, ProcessSet() as processes:
        caller = _Caller(address, token)
        try:
            wait_until(caller.ready, 30, "the listener to answer a read token")
            rss_before = rss_bytes(daemon.pid)
            before, _ = caller.calls(settings.baseline_seconds)
            attacker = processes.spawn(
                python_module(
                    "bench.rapid_reset_client",
                    "127.0.0.1",
                    str(port),
                    str(connections),
                    str(settings.seconds),
                ),
                stdout=subprocess.PIPE,
            )
            load = Path("/proc/loadavg").read_text().split()[0]
            pacing = processes.spawn(
                python_module(
                    "bench.paced_caller", address, str(token_file), str(settings.seconds)
                ),
                stdout=subprocess.PIPE,
            )
            during, failed = caller.calls(settings.seconds)
            paced_out, _ = pacing.communicate(timeout=settings.seconds + 60)
            out, _ = attacker.communicate(timeout=settings.seconds + 60)
            peak = daemon.peak_rss()
            after, _ = caller.calls(settings.baseline_seconds)
            rss_after = rss_bytes(daemon.pid)
        finally:
            caller.close()
    attack = json.loads(out)
    paced = json.loads(paced_out)
    return {
        "connections": connections,
        "attack": attack,
        "daemon_rss_before_bytes": rss_before,
        "daemon_peak_rss_bytes": peak,
        "daemon_rss_after_bytes": rss_after,
        "calls_during": len(during),
        "calls_per_s_during": len(during) / settings.seconds,
        "load_average_1m": float(load),
        "failed_calls_during": failed,
        "latency_before_p50_s": percentile(before, 0.5),
        "latency_p50_s": percentile(during, 0.5),
        "latency_p99_s": percentile(during, 0.99),
        "latency_after_p50_s": percentile(after, 0.5),
        "paced_calls": len(paced["latencies_s"]),
        "paced_failed": paced["failed"],
        "paced_p50_s": percentile(paced["latencies_s"], 0.5),
        "paced_p90_s": percentile(paced["latencies_s"], 0.9),
    }


def tables(result: dict[str, Any]) -> list[Table]:
    rows = []
    for run in result["runs"]:
        attack = run["attack"]
        rows.append(
            (
                str(run["connections"]),
                f"{attack['streams']:,}",
                f"{attack['streams'] / max(attack['elapsed_s'], 1e-9):,.0f}",
                number(run["daemon_rss_before_bytes"], 0, 1 / MIB),
                number(run["daemon_peak_rss_bytes"], 0, 1 / MIB),
                number(run["daemon_rss_after_bytes"], 0, 1 / MIB),
                number(run["latency_before_p50_s"], 2, 1000),
                number(run["latency_p50_s"], 2, 1000),
                number(run["latency_p99_s"], 1, 1000),
                f"{run['calls_during']:,}",
                f"{run['calls_per_s_during']:,.0f}",
                number(run.get("paced_p50_s"), 1, 1000),
                number(run.get("paced_p90_s"), 1, 1000),
                ", ".join(f"{code} {n}" for code, n in run["failed_calls_during"].items()) or "0",
                f"{run['load_average_1m']:.1f}",
            )
        )
    headers = (
        "connections",
        "streams reset",
        "streams/s",
        "RSS before MiB",
        "peak RSS MiB",
        "RSS after MiB",
        "p50 before ms",
        "p50 during ms",
        "p99 during ms",
        "calls during",
        "calls/s during",
        "paced p50 ms",
        "paced p90 ms",
        "failed calls",
        "load (1 min)",
    )
    notes = (
        "a client with no token sends HEADERS then RST_STREAM per stream on N connections to"
        f" a --listen port for {result['settings']['seconds']:.0f} s; a read-token holder calls"
        " ListJobs back to back on its own connection meanwhile",
        "paced: one more ListJobs every 0.1 s from a process of its own (bench/paced_caller.py),"
        " whatever the earlier ones do (a failed call counts as 10 s): the even sample of the"
        " attack's span",
        "targets: peak RSS <= 200 MB and the token holder's p50 <= 50 ms during the attack,"
        " judged on the paced calls",
    )
    return [Table("rapid reset: HTTP/2 streams reset at once, no token", headers, rows, notes)]
