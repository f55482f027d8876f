"""Scenario 6, the SkyPilot loop: N synchronous launches at once through tailhub's skypilot
backend, next to N plain `sky jobs launch` (synchronous, no -d) of the same task.

Both run against the contract double (tests/sky_double/sky), not SkyPilot: the figures are
the number of `sky` processes each way starts (by subcommand; SkyPilot pays an `import sky`
and an API-server round trip for each) and the wall time of the whole loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cli import tailhub
from bench.report import Table, number
from harness.daemon_process import DaemonProcess
from harness.processes import REPO, ProcessSet

SKY = REPO / "tests" / "sky_double" / "sky"
TASK = """\
name: bench-sky
run: |
  for i in 1 2 3 4 5; do echo "step $i"; sleep 0.2; done
"""


@dataclass(frozen=True)
class Settings:
    jobs: int = 30
    timeout_s: float = 180.0


FULL = Settings()
QUICK = Settings(jobs=2)


def run(settings: Settings, scratch: Path, earlier: dict[str, Any]) -> dict[str, Any]:
    scratch.mkdir(parents=True)
    task = scratch / "task.yaml"
    task.write_text(TASK)
    through = _through_tailhub(settings, scratch, task)
    plain = _plain_sky(settings, scratch, task)
    return {"status": "ok", "settings": asdict(settings), "tailhub": through, "plain": plain}


def _environment(sky_home: Path, **extra: str) -> dict[str, str]:
    sky_home.mkdir(parents=True)
    return {**os.environ, "SKY_DOUBLE_HOME": str(sky_home), **extra}


def _through_tailhub(settings: Settings, scratch: Path, task: Path) -> dict[str, Any]:
    sky_home = scratch / "sky-tailhub"
    env = _environment(sky_home)
    with DaemonProcess(scratch / "h", ["--sky", str(SKY)]) as daemon:
        env["TAILHUB_HOME"] = str(daemon.home)
        argv = tailhub("jobs", "launch", "--backend", "skypilot", str(task))
        codes, wall = _loop(settings, [argv] * settings.jobs, env)
        launched = _figures(sky_home, codes, wall)
        with daemon.client() as client:
            listed = client.list()
        # Every log read again (a second terminal, a script): no `sky` process at all.
        again = [tailhub("jobs", "logs", str(job.id)) for job in listed]
        codes, wall = _loop(settings, again, env)
        reread = _figures(sky_home, codes, wall, since=launched["sky_counts"])
    connections = [job.upstream_connections for job in listed]
    return {"launch": launched, "reread": reread, "upstream_connections": connections}


def _plain_sky(settings: Settings, scratch: Path, task: Path) -> dict[str, Any]:
    sky_home = scratch / "sky-plain"
    env = _environment(sky_home)
    argv = [str(SKY), "jobs", "launch", "-y", str(task)]
    codes, wall = _loop(settings, [argv] * settings.jobs, env)
    launched = _figures(sky_home, codes, wall)
    again = [[str(SKY), "jobs", "logs", str(job_id)] for job_id in range(1, settings.jobs + 1)]
    codes, wall = _loop(settings, again, env)
    return {
        "launch": launched,
        "reread": _figures(sky_home, codes, wall, since=launched["sky_counts"]),
    }


def _loop(
    settings: Settings, argvs: list[list[str]], env: dict[str, str]
) -> tuple[list[int | None], float]:
    """`for i in $(seq N); do CMD & done; wait`: every command at once, each synchronous."""
    started = time.perf_counter()
    with ProcessSet() as processes:
        for argv in argvs:
            processes.spawn(argv, env=env, stderr=subprocess.DEVNULL)
        codes = processes.wait_all(settings.timeout_s)
    return codes, time.perf_counter() - started


def _figures(
    sky_home: Path, codes: list[int | None], wall: float, since: dict[str, int] | None = None
) -> dict[str, Any]:
    """Wall time and the `sky` processes started (by subcommand) since the counts `since`."""
    if any(code != 0 for code in codes):
        raise RuntimeError(f"some runs failed: exit codes {sorted(map(str, codes))}")
    counts: Counter[str] = Counter()
    log = sky_home / "invocations.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        argv = json.loads(line)["argv"]
        counts[" ".join(argv[:2]) if argv[:1] == ["jobs"] else argv[0]] += 1
    started = counts - Counter(since or {})
    return {
        "wall_s": wall,
        "sky_processes": dict(started),
        "sky_total": sum(started.values()),
        "sky_counts": dict(counts),
    }


def tables(result: dict[str, Any]) -> list[Table]:
    phases = [(way, phase) for way in ("tailhub", "plain") for phase in ("launch", "reread")]
    kinds = sorted({kind for way, phase in phases for kind in result[way][phase]["sky_processes"]})
    jobs = result["settings"]["jobs"]
    labels = {
        ("tailhub", "launch"): f"tailhub jobs launch --backend skypilot, sync (x{jobs} at once)",
        ("tailhub", "reread"): f"tailhub jobs logs ID (x{jobs} at once, jobs ended)",
        ("plain", "launch"): f"sky jobs launch -y, sync (x{jobs} at once)",
        ("plain", "reread"): f"sky jobs logs ID (x{jobs} at once, jobs ended)",
    }
    rows = []
    for way, phase in phases:
        figures = result[way][phase]
        counts = figures["sky_processes"]
        rows.append(
            (
                labels[(way, phase)],
                number(figures["wall_s"], 1),
                *(str(counts.get(kind, 0)) for kind in kinds),
                str(figures["sky_total"]),
            )
        )
    headers = ("loop", "wall s", *(f"`sky {kind}`" for kind in kinds), "sky processes")
    notes = (
        "against the contract double tests/sky_double/sky, not SkyPilot (no cloud here);",
        "each real `sky` process imports SkyPilot and talks to its API server",
    )
    return [
        Table("SkyPilot: the loop of launches, then every log read again", headers, rows, notes)
    ]
