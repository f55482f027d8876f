"""Scenario sky_load (issue 19, item 6): K synchronous launches at once, each its own CLI
process, of jobs writing 10 KB/s for 60 s, through the `sky` contract double with 50 ms per
API server round trip: through tailhub's skypilot backend, then as K plain `sky jobs launch`
(synchronous, as SkyPilot users run it) of the same task, one after the other in one run.

Per way: the total CPU of every process of ours (tailhub: the CLIs, the daemon and the `sky`
runs it reaped; plain: the `sky jobs launch` processes, which stream their logs themselves),
the peak of concurrent processes and of their summed RSS, the wall time of the loop, each
launch's printed log compared byte for byte with what its job wrote, and exit codes; beside
each, the load average and the other processes' CPU meanwhile. The jobs themselves (the
double's supervisors and `run` sections: the cloud's side) are left out of both ways, and
reported apart.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cli import tailhub
from bench.measure import machine_cpu
from bench.proctree import TreeSampler, descendants
from bench.report import Table, number
from bench.skypilot import SKY
from harness.daemon_process import DaemonProcess
from harness.processes import ProcessSet
from harness.waiting import wait_until

NAME = "bench-load"
LINE_BYTES = 100
_PAD = "x" * (LINE_BYTES - len("line 000000 \n"))
# What the job writes, one block of lines a second; `read -t 1` on a FIFO nobody writes to
# waits a second without starting a `sleep` process (12,000 of them would load the machine).
TASK = """\
name: {name}
run: |
  exec 3<>{pause}
  n=0
  for ((s = 0; s < {seconds}; s++)); do
    block=
    for ((i = 0; i < {lines}; i++)); do
      printf -v line 'line %06d {pad}\\n' "$n"
      block+=$line
      n=$((n + 1))
    done
    printf '%s' "$block"
    read -t 1 -u 3 || :
  done
"""
ANSI = re.compile(rb"\x1b\[[0-9;]*m")
TASK_LINE = re.compile(rb"^\(" + re.escape(NAME.encode()) + rb", pid=\d+\) (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Settings:
    jobs: int = 200
    seconds: int = 60
    lines_per_s: int = 100  # of LINE_BYTES each: 10 KB/s
    latency_ms: int = 50  # per API server round trip of every `sky` run
    timeout_s: float = 900.0


FULL = Settings()
QUICK = Settings(jobs=4, seconds=1)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    scratch.mkdir(parents=True)
    pause = scratch / "pause"
    os.mkfifo(pause)
    task = scratch / "task.yaml"
    task.write_text(
        TASK.format(
            name=NAME, pause=pause, seconds=settings.seconds, lines=settings.lines_per_s, pad=_PAD
        )
    )
    expected = expected_log(settings)
    sky = _install_sky(scratch)
    through = _through_tailhub(settings, scratch, sky, task, expected)
    plain = _plain_sky(settings, scratch, sky, task, expected)
    return {
        "status": "ok",
        "settings": asdict(settings),
        "log_bytes": len(expected),
        "tailhub": through,
        "plain": plain,
        # The jobs' own CPU is no process of the benchmark's tree: counted here as its own, so
        # that the "other processes" figure of the scenario leaves it out.
        "external_cpu_s": through["job_cpu_s"] + plain["job_cpu_s"],
    }


def expected_log(settings: Settings) -> bytes:
    lines = settings.seconds * settings.lines_per_s
    return b"".join(f"line {n:06d} {_PAD}\n".encode() for n in range(lines))


def _install_sky(scratch: Path) -> Path:
    """The double as pip installs a console script: `#!/path/to/python`, run directly. (Its
    own `#!/usr/bin/env python3` may find a pyenv shim, a bash script that forks and costs
    more than the double itself: it would weigh on every `sky` run.)"""
    installed = scratch / "bin" / "sky"
    installed.parent.mkdir()
    _, body = SKY.read_text().split("\n", 1)
    installed.write_text(f"#!{sys.executable}\n{body}")
    installed.chmod(0o755)
    return installed


def _sky_home(scratch: Path, way: str, settings: Settings) -> Path:
    home = scratch / f"sky-{way}"
    home.mkdir()
    # Read by every `sky` run, whoever starts it (the daemon passes on the client's environment,
    # but this holds whatever it passes).
    (home / "faults.env").write_text(f"SKY_DOUBLE_LATENCY_MS={settings.latency_ms}\n")
    return home


def _through_tailhub(
    settings: Settings, scratch: Path, sky: Path, task: Path, expected: bytes
) -> dict[str, Any]:
    sky_home = _sky_home(scratch, "tailhub", settings)
    env = {**os.environ, "SKY_DOUBLE_HOME": str(sky_home)}
    with DaemonProcess(scratch / "h", ["--sky", str(sky)]) as daemon:
        env["TAILHUB_HOME"] = str(daemon.home)
        argv = tailhub("jobs", "launch", "--backend", "skypilot", str(task))
        figures = _loop(settings, scratch / "out-tailhub", [argv] * settings.jobs, env, daemon)
        daemon_rss = daemon.peak_rss()
    return {
        **figures,
        **_sky_usage(sky_home),
        **_exactness(scratch / "out-tailhub", settings.jobs, expected),
        "daemon_peak_rss_bytes": daemon_rss,
    }


def _plain_sky(
    settings: Settings, scratch: Path, sky: Path, task: Path, expected: bytes
) -> dict[str, Any]:
    sky_home = _sky_home(scratch, "plain", settings)
    env = {**os.environ, "SKY_DOUBLE_HOME": str(sky_home)}
    argv = [str(sky), "jobs", "launch", "-y", str(task)]
    figures = _loop(settings, scratch / "out-plain", [argv] * settings.jobs, env, None)
    return {
        **figures,
        **_sky_usage(sky_home),
        **_exactness(scratch / "out-plain", settings.jobs, expected),
    }


def _loop(
    settings: Settings,
    out: Path,
    argvs: list[list[str]],
    env: dict[str, str],
    daemon: DaemonProcess | None,
) -> dict[str, Any]:
    """`for i in $(seq K); do CMD > out.$i & done; wait`, measured: every command at once,
    each synchronous, each printing into a file of its own."""
    out.mkdir()
    load_before = os.getloadavg()
    busy_before, capacity_before = machine_cpu()
    children_before = _children_cpu()
    daemon_before = daemon.cpu().total if daemon is not None else 0.0
    with TreeSampler(os.getpid(), prune={"_supervise"}) as sampler, ExitStack() as files:
        started = time.perf_counter()
        with ProcessSet() as processes:
            for index, argv in enumerate(argvs):
                stdout = files.enter_context(open(out / f"{index}.out", "wb"))
                stderr = files.enter_context(open(out / f"{index}.err", "wb"))
                processes.spawn(argv, env=env, stdout=stdout, stderr=stderr)
            codes = processes.wait_all(settings.timeout_s)
        wall = time.perf_counter() - started
        if daemon is not None:
            # The `sky jobs logs` runs end with their jobs; their CPU is the daemon's once reaped.
            wait_until(
                lambda: not descendants(daemon.pid, {"_supervise"}),
                60.0,
                "the daemon's `sky` runs to end",
            )
    clis = _children_cpu() - children_before
    daemon_tree = daemon.cpu().total - daemon_before if daemon is not None else 0.0
    busy, capacity = machine_cpu()
    return {
        "wall_s": wall,
        "exit_codes": {str(code): codes.count(code) for code in sorted(set(codes), key=str)},
        "cli_cpu_s": clis,
        "daemon_tree_cpu_s": daemon_tree,
        "total_cpu_s": clis + daemon_tree,
        "peak_processes": sampler.peak.processes,
        "peak_by_name": sampler.peak.by_name,
        "peak_pss_bytes": sampler.peak.pss_bytes,
        "machine": {
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "busy_cpu_s": busy - busy_before,
            "capacity_cpu_s": capacity - capacity_before,
        },
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _sky_usage(sky_home: Path) -> dict[str, Any]:
    """What the double's runs reported of themselves: `sky` commands, and the jobs apart."""
    path = sky_home / "usage.log"
    runs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    jobs = [run for run in runs if run["argv"][:1] == ["_supervise"]]
    commands = [run for run in runs if run["argv"][:1] != ["_supervise"]]
    kinds: dict[str, int] = {}
    for run in commands:
        kind = " ".join(run["argv"][:2])
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "sky_processes": kinds,
        "sky_cpu_s": sum(run["cpu_s"] for run in commands),
        "sky_round_trips": sum(run["round_trips"] for run in commands),
        "job_cpu_s": sum(run["cpu_s"] for run in jobs),
    }


def _exactness(out: Path, jobs: int, expected: bytes) -> dict[str, Any]:
    """How many launches printed exactly the job's bytes (after SkyPilot's task prefix)."""
    exact = 0
    misses: list[str] = []
    for index in range(jobs):
        printed = ANSI.sub(b"", (out / f"{index}.out").read_bytes())
        lines: list[bytes] = TASK_LINE.findall(printed)
        got = b"".join(line + b"\n" for line in lines)
        if got == expected:
            exact += 1
        elif len(misses) < 5:
            said = (out / f"{index}.err").read_bytes().decode(errors="replace").strip()
            last = said.splitlines()[-1][:200] if said else "nothing on stderr"
            misses.append(f"launch {index}: {len(got):,} of {len(expected):,} B; {last}")
    return {"exact_logs": exact, "misses": misses}


def tables(result: dict[str, Any]) -> list[Table]:
    settings = result["settings"]
    k = settings["jobs"]
    labels = {
        "tailhub": f"tailhub jobs launch --backend skypilot (x{k})",
        "plain": f"sky jobs launch -y (x{k})",
    }
    rows = []
    for way in ("tailhub", "plain"):
        figures = result[way]
        machine = figures["machine"]
        rows.append(
            (
                labels[way],
                number(figures["wall_s"], 1),
                number(figures["total_cpu_s"], 1),
                number(figures["cli_cpu_s"], 1) if way == "tailhub" else "-",
                number(figures["daemon_tree_cpu_s"], 1) if way == "tailhub" else "-",
                number(figures["sky_cpu_s"], 1),
                str(figures["peak_processes"]),
                number(figures["peak_pss_bytes"] / 2**20, 0),
                f"{figures['exact_logs']}/{k}",
                " ".join(f"{code}:{n}" for code, n in figures["exit_codes"].items()),
                f"{machine['loadavg_before'][0]:.1f}->{machine['loadavg_after'][0]:.1f}",
                f"{_other_share(figures):.0%}",
            )
        )
    headers = (
        "way",
        "wall s",
        "CPU s",
        "CLIs",
        "daemon+sky",
        "sky (own)",
        "peak procs",
        "peak MiB",
        "exact logs",
        "exit codes",
        "load 1m",
        "others' CPU",
    )
    notes = (
        f"{k} jobs at once, each {settings['seconds']} s of {settings['lines_per_s']} lines of"
        f" {LINE_BYTES} B a second ({result['log_bytes']:,} B per log), through the contract"
        f" double tests/sky_double/sky with {settings['latency_ms']} ms per API round trip;",
        "CPU s: every process of the way (tailhub: CLIs + the daemon and the `sky` runs it"
        " reaped); sky (own): what the double's runs counted of themselves;",
        "the jobs' own CPU (the cloud's side) is in neither: "
        f"{result['tailhub']['job_cpu_s']:.1f} s and {result['plain']['job_cpu_s']:.1f} s;",
        "a real `sky` process imports SkyPilot (the double's is standard library only), so each"
        " `sky` run costs more for real than here",
    )
    return [Table("SkyPilot load: K synchronous launches at once", headers, rows, notes)]


def _other_share(figures: dict[str, Any]) -> float:
    """The machine's CPU used meanwhile by processes outside this way's tree (other helpers'
    runs, the jobs themselves), as a share of the machine's capacity."""
    machine = figures["machine"]
    ours = figures["total_cpu_s"] + figures["job_cpu_s"]
    other = max(0.0, machine["busy_cpu_s"] - ours)
    return other / machine["capacity_cpu_s"] if machine["capacity_cpu_s"] else 0.0
