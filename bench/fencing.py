"""Scenario: what fencing a cluster node's commands costs (issue 19, item 5).

- memory: one `tailhubd --redis` node runs N command jobs (each `sleep`s once it said it is
  up). Its fence processes and the commands' gates (a dash each, which stays as the command's
  parent to kill its whole group when the daemon dies) are counted and their RSS and PSS read
  (PSS: the gates share dash's pages, so their RSS counts them N times); beside it, the RSS of one
  Python process like the fence each command used to have (`python -I` importing the old
  fence's modules), times N.
- start: how long a command takes from its start to its first byte behind the node's fence
  (its gate, then `printf`), against the same `printf` started bare,
  and against it behind a Python interpreter (the old fence's start), interleaved in one run.
- renewal: Lua scripts the node runs in Redis per keep-alive turn while it holds the N leases
  (INFO commandstats): its name's hold and one renewal of every lease, not one per lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from bench.failover import daemon_args
from bench.measure import percentile
from bench.redis_server import INSTALL_HINT, available, cluster_redis
from bench.report import Table, number
from harness.daemon_process import DaemonProcess
from harness.readings import rss_bytes
from harness.waiting import wait_until
from tailhub.daemon.process.fences import FENCE_MODULE, GATE_NAME, NodeFence, gate_argv

_FOREVER = ["/bin/sh", "-c", "echo up; exec sleep 3600"]
# A Python process in front of the command, as the old per-command fence was.
_PYTHON_FRONT = [
    sys.executable,
    "-I",
    "-c",
    "import os, sys, tailhub.daemon.process.fence; os.execvp(sys.argv[1], sys.argv[1:])",
]
_OLD_FENCE = [
    sys.executable,
    "-I",
    "-c",
    "import select, tailhub.daemon.process.fence; select.select([], [], [])",
]


@dataclass(frozen=True)
class Settings:
    commands: int = 100  # command jobs on the node
    starts: int = 60  # starts of each kind, interleaved
    lease_ms: int = 3000
    observe_s: float = 6.0  # how long Redis's script calls are counted


FULL = Settings()
QUICK = Settings(commands=5, starts=5, lease_ms=1000, observe_s=1.0)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    if not available():
        return {"status": f"skipped: no redis-server on this machine ({INSTALL_HINT})"}
    scratch.mkdir(parents=True)
    result: dict[str, Any] = {"settings": asdict(settings), "loadavg": [os.getloadavg()]}
    result |= _node(settings, scratch)
    result["loadavg"].append(os.getloadavg())
    result["start"] = asyncio.run(_starts(settings.starts))
    result["loadavg"].append(os.getloadavg())
    result["status"] = "ok"
    return result


def _node(settings: Settings, directory: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(cluster_redis(directory / "redis"))
        node = stack.enter_context(
            DaemonProcess(directory / "node", daemon_args(server, 0, settings.lease_ms))
        )
        with node.client() as client:
            jobs = [client.attach_command(_FOREVER) for _ in range(settings.commands)]

            def up() -> bool:
                return all(client.get(job.id).log_size >= len(b"up\n") for job in jobs)

            wait_until(up, 120, f"{settings.commands} commands to start")
        children = _children(node.pid)
        fences = [pid for pid in children if FENCE_MODULE.encode() in _cmdline(pid)]
        gates = [pid for pid in children if GATE_NAME.encode() in _cmdline(pid)]
        with redis.Redis(port=server.port, socket_timeout=5.0) as client:
            before = _scripts(client)
            time.sleep(settings.observe_s)  # the node renews meanwhile, as it always does
            scripts = _scripts(client) - before
        old = subprocess.Popen(_OLD_FENCE, stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: b"select" in _cmdline(old.pid) and _settled(old.pid), 30)
            old_rss = rss_bytes(old.pid)
        finally:
            old.kill()
            old.wait()
        turns = settings.observe_s / (settings.lease_ms / 4000)
        return {
            "fence_processes": len(fences),
            "fence_rss_bytes": sum(rss_bytes(pid) for pid in fences),
            "fence_pss_bytes": sum(_pss(pid) for pid in fences),
            "gate_processes": len(gates),
            "gate_rss_bytes": sum(rss_bytes(pid) for pid in gates),
            "gate_pss_bytes": sum(_pss(pid) for pid in gates),
            "old_fence_rss_bytes": old_rss,
            "old_fencing_rss_bytes": old_rss * settings.commands,
            "scripts_per_turn": scripts / turns,
            "leases": settings.commands,
        }


async def _starts(count: int) -> dict[str, Any]:
    """Seconds from the start of `printf x` to its byte: bare, behind the fence, and behind a
    Python interpreter, interleaved."""
    fence = NodeFence()
    fence.start()
    try:
        fence.extend({1: time.monotonic() + 3600})
        await _first_byte(*_fenced(fence))  # (the fence is up)
        times: dict[str, list[float]] = {"bare": [], "fenced": [], "python": []}
        for _ in range(count):
            times["bare"].append(await _first_byte(["printf", "x"]))
            times["fenced"].append(await _first_byte(*_fenced(fence)))
            times["python"].append(await _first_byte([*_PYTHON_FRONT, "printf", "x"]))
    finally:
        fence.close()
    summary: dict[str, Any] = {}
    for kind, seconds in times.items():
        seconds.sort()
        summary[f"{kind}_p50_s"] = statistics.median(seconds)
        summary[f"{kind}_p90_s"] = percentile(seconds, 0.9)
    summary["overhead_p50_s"] = summary["fenced_p50_s"] - summary["bare_p50_s"]
    # Paired (each fenced start against the bare one just before it): the machine's load
    # moves both alike.
    pairs = [f - b for f, b in zip(times["fenced"], times["bare"], strict=True)]
    summary["overhead_paired_p50_s"] = statistics.median(sorted(pairs))
    return summary


def _fenced(fence: NodeFence) -> tuple[list[str], tuple[int, int]]:
    go, report = fence.arm(1)
    return gate_argv(go, report, ["printf", "x"]), (go, report)


async def _first_byte(argv: list[str], pass_fds: tuple[int, ...] = ()) -> float:
    started = time.perf_counter()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            pass_fds=pass_fds,
        )
    finally:
        for fd in pass_fds:
            os.close(fd)
    assert process.stdout is not None
    data = await process.stdout.read(1)
    took = time.perf_counter() - started
    await process.wait()
    if data != b"x":
        raise RuntimeError(f"{argv[0]} printed {data!r}, exit status {process.returncode}")
    return took


def _scripts(client: redis.Redis) -> int:
    info: Any = client.info("commandstats")
    return sum(int(info.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _settled(pid: int) -> bool:
    """Waiting in select: done importing."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
    return "poll" in wchan or "select" in wchan


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tables(result: dict[str, Any]) -> list[Table]:
    n = result["settings"]["commands"]
    mib = 1 / 2**20
    memory = Table(
        f"fencing: {n} command jobs on one cluster node",
        ("", "fence processes", "RSS MiB", "PSS MiB", "Lua scripts per keep-alive turn"),
        [
            (
                "one fence per node",
                str(result["fence_processes"]),
                number(result["fence_rss_bytes"], 1, mib),
                number(result["fence_pss_bytes"], 1, mib),
                number(result["scripts_per_turn"], 1),
            ),
            (
                "the commands' gates",
                str(result.get("gate_processes", "-")),
                number(result.get("gate_rss_bytes", 0), 1, mib),
                number(result.get("gate_pss_bytes", 0), 1, mib),
                "",
            ),
            (
                f"one per command (before: {n} x one)",
                str(n),
                number(result["old_fencing_rss_bytes"], 1, mib),
                "-",
                f"{n + 1} (one per lease + the hold)",
            ),
        ],
        (
            "before: a `python -I` waiting in select (the old fence's interpreter), measured now,"
            " times N",
            "Lua scripts: evalsha/eval calls in Redis over the turns observed (the node's name "
            "hold and the renewal of every lease)",
        ),
    )
    start = result["start"]
    ms = 1000.0
    starts = Table(
        "fencing: a command's start to its first byte (`printf x`), interleaved in one run",
        ("", "p50 ms", "p90 ms"),
        [
            (
                "bare (subprocess)",
                number(start["bare_p50_s"], 1, ms),
                number(start["bare_p90_s"], 1, ms),
            ),
            (
                "behind the node's fence",
                number(start["fenced_p50_s"], 1, ms),
                number(start["fenced_p90_s"], 1, ms),
            ),
            (
                "behind a Python interpreter (before)",
                number(start["python_p50_s"], 1, ms),
                number(start["python_p90_s"], 1, ms),
            ),
        ],
        (
            f"over bare: {start['overhead_p50_s'] * ms:.1f} ms (p50s), "
            f"{start['overhead_paired_p50_s'] * ms:.1f} ms (paired); load average "
            + ", ".join(f"{load[0]:.1f}" for load in result["loadavg"]),
        ),
    )
    return [memory, starts]
