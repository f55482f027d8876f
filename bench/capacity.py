"""Scenario, capacity: the highest input rate N followers keep up with, tailhub against the
minimal grpc.aio server, in the same run.

A probe is one fan-out run at a given rate (the fan-out scenario's job, writer and follower
processes; for the minimal server, `bench.minimal`, which writes the same lines itself). It
passes when every follower got every byte and the p99 write-to-receipt latency is at most
`p99_limit`. The search starts at `start_rate`, halves until a probe passes, doubles until
one fails, then bisects between the two. With `--py-spy`, tailhub runs once more at its
capacity under py-spy, and the frames where the daemon spent its CPU are listed.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import fanout, follower
from bench.report import Table, number, percent
from harness.processes import ProcessSet, python_module
from harness.waiting import wait_until

MB = 1_000_000
# Frames of a thread that waits (py-spy's --native shows them; they cost no CPU): a stack
# is left out when one of its last few frames starts with one of these.
_WAITING = (
    "epoll_wait",
    "epoll_pwait",
    "poll ",
    "ppoll",
    "select ",
    "pthread_cond_",
    "futex",
    "nanosleep",
    "sem_wait",
    "sem_timedwait",
    "PyThread_acquire_lock_timed",
    "_queue_SimpleQueue_get",
)
Probe = Callable[[float, Path], dict[str, Any]]


@dataclass(frozen=True)
class Settings:
    followers: int = 1000
    start_rate: float = 100_000.0  # bytes per second
    p99_limit: float = 0.1
    duration: float = 5.0  # seconds of writing per probe
    clients: int = 4
    bisections: int = 2
    max_probes: int = 9  # per server
    # Down to ~1.6 KB/s (16 lines/s): each line still reaches every follower as a message of
    # its own there, so what limits p99 is the time to send N messages, not the bytes.
    max_halvings: int = 6
    profile_dir: Path | None = None
    top_frames: int = 5
    # Further tailhub searches: (label, tailhubd arguments), e.g. a live batching window.
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Further searches of the minimal server split into this many processes (each with its
    # share of the followers): what serving from more than one process would give here.
    minimal_processes: tuple[int, ...] = ()


FULL = Settings()
# `--capacity-experiments`: what could raise the ceiling, searched beside the two above.
# (A live batching window, `variants` with tailhubd's `--live-batch-ms 10` at commit
# 4c75e85, did not pay and was taken out of the daemon.)
EXPERIMENTS = {"minimal_processes": (2,)}
QUICK = Settings(followers=10, duration=1.0, clients=2, bisections=0, max_probes=1)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    def tailhub(args: tuple[str, ...]) -> Probe:
        def probe(rate: float, directory: Path) -> dict[str, Any]:
            return fanout.run_one(
                _fanout(settings), settings.followers, rate, directory, None, args
            )

        return probe

    def minimal(servers: int) -> Probe:
        def probe(rate: float, directory: Path) -> dict[str, Any]:
            return _minimal_run(settings, rate, directory, servers)

        return probe

    searches = {
        "tailhub": _search(settings, tailhub(()), scratch / "tailhub"),
        "minimal": _search(settings, minimal(1), scratch / "minimal"),
    }
    for servers in settings.minimal_processes:
        label = f"minimal x{servers} processes"
        searches[label] = _search(settings, minimal(servers), scratch / f"minimal{servers}")
    for index, (label, args) in enumerate(settings.variants):
        searches[label] = _search(settings, tailhub(args), scratch / f"variant{index}")
    result: dict[str, Any] = {"status": "ok", "settings": asdict(settings), "searches": searches}
    # At its capacity; when it passed at no rate tried, at the lowest (say so).
    capacity = searches["tailhub"]["capacity"] or min(
        probe["rate_bytes_per_s"] for probe in searches["tailhub"]["probes"]
    )
    if settings.profile_dir is not None:
        out = settings.profile_dir / f"capacity-{settings.followers}"
        profiled = fanout.run_one(
            _fanout(settings), settings.followers, capacity, scratch / "profiled", out
        )
        raw = out / f"fanout-{settings.followers}.txt"
        result["profile"] = {
            "rate_bytes_per_s": capacity,
            "at_capacity": searches["tailhub"]["capacity"] is not None,
            "file": str(raw),
            "run": profiled,
            "top_frames": top_frames(raw, settings.top_frames),
        }
    return result


def _fanout(settings: Settings) -> fanout.Settings:
    return replace(fanout.FULL, duration=settings.duration, clients=settings.clients)


def _passes(settings: Settings, probe: dict[str, Any]) -> bool:
    p99: float = probe["latency_p99_s"]
    delivered: float = probe["delivered_share"]
    return delivered >= 1.0 and p99 == p99 and p99 <= settings.p99_limit


def _search(settings: Settings, probe: Probe, directory: Path) -> dict[str, Any]:
    """Halving to a pass, doubling to a failure, then bisecting; at most `max_probes` runs."""
    probes: list[dict[str, Any]] = []

    def attempt(rate: float) -> bool:
        result = probe(rate, directory / f"p{len(probes)}")
        result["passed"] = _passes(settings, result)
        probes.append(result)
        return bool(result["passed"])

    rate = settings.start_rate
    good: float | None = None
    bad: float | None = None
    while len(probes) < settings.max_probes:
        if attempt(rate):
            good = rate
            if bad is not None:
                break
            rate *= 2
        else:
            bad = rate
            if good is not None or rate <= settings.start_rate / 2**settings.max_halvings:
                break
            rate /= 2
    for _ in range(settings.bisections):
        if good is None or bad is None or len(probes) >= settings.max_probes:
            break
        rate = (good + bad) / 2
        if attempt(rate):
            good = rate
        else:
            bad = rate
    best = max(
        (p for p in probes if p["passed"]), key=lambda p: p["rate_bytes_per_s"], default=None
    )
    return {"capacity": good, "first_failure": bad, "probes": probes, "at_capacity": best}


def _minimal_run(
    settings: Settings, rate: float, directory: Path, servers: int = 1
) -> dict[str, Any]:
    """One probe of `bench.minimal`, its followers split evenly over `servers` processes."""
    directory.mkdir(parents=True)
    timeout = settings.duration + 120
    count = settings.followers
    outs: list[Path] = []
    reports: list[Path] = []
    with ProcessSet() as processes:
        for index in range(servers):
            socket = directory / f"s{index}.sock"
            address = f"unix:{socket}"
            share = count // servers + (index < count % servers)
            reports.append(directory / f"server-{index}.json")
            with open(reports[-1], "wb") as report_file:
                server = processes.spawn(
                    python_module(
                        "bench.minimal", address, str(share), str(rate), str(settings.duration)
                    ),
                    stdout=report_file,
                )
            _wait_listening(socket, server)
            outs += follower.spawn(
                processes,
                address,
                [0] * share,
                clients=max(1, settings.clients // servers),
                directory=directory / f"f{index}",
                timeout=timeout,
                flags=["--latency"],
            )
        processes.wait_all(timeout)
    loaded = [json.loads(path.read_text()) for path in reports]
    received = follower.collect(outs)
    started = min(report["started"] for report in loaded)
    summary = fanout.summary(count, loaded[0]["log_bytes"], 1, started, received)
    cpu = sum(report["cpu"] for report in loaded)
    return summary | {"rate_bytes_per_s": rate, "daemon_cpu_s": cpu}


def _wait_listening(socket: Path, server: subprocess.Popen[bytes]) -> None:
    wait_until(lambda: socket.exists() or server.poll() is not None, 30, "the server")


def top_frames(raw: Path, count: int) -> list[dict[str, Any]]:
    """The frames py-spy sampled most often at the top of the daemon's stacks (self time),
    threads waiting left out."""
    if not raw.exists():
        return []
    own: Counter[str] = Counter()
    total = 0
    for text in raw.read_text(errors="replace").splitlines():
        stack, _, samples = text.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        frames = [frame for frame in stack.split(";") if frame]
        if not frames or any(frame.startswith(_WAITING) for frame in frames[-4:]):
            continue
        own[_frame_name(frames[-1])] += int(samples)
        total += int(samples)
    return [
        {"frame": frame, "samples": samples, "share": samples / total}
        for frame, samples in own.most_common(count)
    ]


def _frame_name(frame: str) -> str:
    """A native frame without symbols is an address in a library: the library names it."""
    address, _, library = frame.partition(" ")
    return f"{library} (no symbol)" if address.startswith("0x") and library else frame


def _per_message_us(run: dict[str, Any]) -> float | None:
    return run["daemon_cpu_s"] / run["messages"] * 1e6 if run["messages"] else None


def _per_mb_ms(run: dict[str, Any]) -> float | None:
    delivered = run["bytes_per_s"] * run["elapsed_s"]
    return run["daemon_cpu_s"] / (delivered / MB) * 1000 if delivered else None


def tables(result: dict[str, Any]) -> list[Table]:
    settings = result["settings"]
    searches = result["searches"]
    rows = []
    for name, search in searches.items():
        for probe in search["probes"]:
            rows.append(
                (
                    name,
                    number(probe["rate_bytes_per_s"], 3, 1 / MB),
                    "pass" if probe["passed"] else "FAIL",
                    percent(probe["delivered_share"], 2),
                    number(probe["latency_p50_s"], 1, 1000),
                    number(probe["latency_p99_s"], 1, 1000),
                    number(probe["messages_per_s"], 0),
                    number(probe["mean_message_bytes"], 0),
                    number(probe["daemon_cpu_s"], 2),
                    number(_per_message_us(probe), 1),
                    number(_per_mb_ms(probe), 1),
                )
            )
    headers = (
        "server",
        "MB/s in",
        "",
        "delivered",
        "p50 ms",
        "p99 ms",
        "msgs/s",
        "bytes/msg",
        "server CPU s",
        "CPU us/msg",
        "CPU ms/MB",
    )
    ours, theirs = searches["tailhub"]["capacity"], searches["minimal"]["capacity"]
    share = f"{ours / theirs:.0%}" if ours and theirs else "-"
    notes = [
        f"capacity (highest passing rate): tailhub {number(ours, 3, 1 / MB)} MB/s,"
        f" minimal grpc.aio server {number(theirs, 3, 1 / MB)} MB/s: {share} (target >= 80%)",
        f"pass: 100% delivered and p99 <= {settings['p99_limit'] * 1000:g} ms;"
        f" {settings['duration']:g} s of writing per probe; CPU per message and per MB"
        " delivered is the server process's own",
    ]
    title = (
        f"capacity: N = {settings['followers']:,} followers of one writer, rate stepped"
        " (halve/double, then bisect)"
    )
    tables = [Table(title, headers, rows, tuple(notes))]
    profile = result.get("profile")
    if profile:
        frames = [
            (str(index), percent(frame["share"], 1), frame["frame"][:110])
            for index, frame in enumerate(profile["top_frames"], 1)
        ]
        tables.append(
            Table(
                f"py-spy: where the daemon's CPU went at"
                f" {number(profile['rate_bytes_per_s'], 3, 1 / MB)} MB/s"
                f" ({'its capacity' if profile['at_capacity'] else 'no rate passed: the lowest'})"
                f" ({profile['file']})",
                ("#", "self", "frame"),
                frames,
                (
                    "self: share of the busy samples with this frame on top (native frames"
                    " included; threads waiting in epoll/futex/poll left out)",
                ),
                left=3,
            )
        )
    return tables
