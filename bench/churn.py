"""Issue 16, item 20: the daemon's memory under churn, long enough to tell a leak from a warm-up.

Workers launch short local jobs one after another (each with the launching shell's
environment, as `tailhub jobs launch` sends it) and follow each of them from its start to its
end several times, checking every byte. The daemon's RSS and open fds are sampled all along.
With `--trace FRAMES` the daemon runs with TAILHUB_TRACEMALLOC (memtrace.py) and is sent
SIGUSR2 every `--report-every` seconds: its log then holds which allocation sites grew, since
the first report and since the previous one.

    .venv/bin/python -m bench.churn --minutes 30            # the soak: RSS per minute
    .venv/bin/python -m bench.churn --minutes 10 --trace 8  # where the memory goes

Prints a line per minute (RSS, fds, launches, exact follows), then the RSS slope over the
part after the warm-up (`--warm-up` minutes) in MB/min; exits 1 when a follow was not exact.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.daemon_process import DaemonProcess
from harness.processes import REPO
from harness.readings import rss_bytes
from tailhub.client import Client, LogChunk, LogEnd
from tailhub.client._types import JobState

MB = 1_000_000
LINES = 40
RUN = f"seq 1 {LINES}"
_SAMPLE_INTERVAL = 5.0
EXPECTED = b"".join(b"%d\n" % i for i in range(1, LINES + 1))


@dataclass
class Totals:
    launches: int = 0
    follows: int = 0
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _follow_exact(client: Client, job_id: int) -> str | None:
    """None when the follow got the job's bytes exactly, then its end; else what differed."""
    data = bytearray()
    for item in client.follow(job_id):
        if isinstance(item, LogChunk):
            if item.offset != len(data):
                return f"job {job_id}: chunk at {item.offset}, expected {len(data)}"
            data += item.data
        elif isinstance(item, LogEnd):
            if bytes(data) != EXPECTED or item.state is not JobState.SUCCEEDED:
                return f"job {job_id}: {len(data)} bytes, {item.state}"
            return None
    return f"job {job_id}: no end"


def _worker(daemon: DaemonProcess, follows: int, until: float, totals: Totals) -> None:
    environment = dict(os.environ)
    with daemon.client() as client:
        while time.monotonic() < until and not totals.wrong:
            job = client.launch(RUN, workdir=str(REPO), environment=environment)
            with totals.lock:
                totals.launches += 1
            for _ in range(follows):
                problem = _follow_exact(client, job.id)
                with totals.lock:
                    totals.follows += 1
                    if problem is not None:
                        totals.wrong.append(problem)


def slope_mb_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, in MB per minute."""
    if len(samples) < 2:
        return float("nan")
    times = [t / 60 for t, _ in samples]
    values = [rss / MB for _, rss in samples]
    mean_t, mean_v = sum(times) / len(times), sum(values) / len(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    return sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--follows", type=int, default=9, help="exact follows per job")
    parser.add_argument("--warm-up", type=float, default=5.0, help="minutes left out of the slope")
    parser.add_argument("--trace", type=int, default=0, metavar="FRAMES", help="0: no tracing")
    parser.add_argument("--report-every", type=float, default=120.0, metavar="SECONDS")
    parser.add_argument("--keep", action="store_true", help="keep the daemon's home and log")
    parser.add_argument("daemon_args", nargs="*", help="after --: more tailhubd flags")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="thch-", dir="/tmp"))
    env = {"TAILHUB_TRACEMALLOC": str(args.trace)} if args.trace else {}
    daemon = DaemonProcess(scratch / "h", args.daemon_args, env=env)
    totals = Totals()
    began = time.monotonic()
    until = began + args.minutes * 60
    samples: list[tuple[float, int]] = []
    with daemon:
        workers = [
            threading.Thread(target=_worker, args=(daemon, args.follows, until, totals))
            for _ in range(args.workers)
        ]
        for worker in workers:
            worker.start()
        next_report = began if args.trace else float("inf")
        next_line = began
        reports = 0
        while any(worker.is_alive() for worker in workers):
            now = time.monotonic()
            samples.append((now - began, rss_bytes(daemon.pid)))
            if now >= next_report:
                os.kill(daemon.pid, signal.SIGUSR2)
                reports += 1
                next_report += args.report_every
            if now >= next_line:
                fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
                print(
                    f"{(now - began) / 60:5.1f} min  RSS {samples[-1][1] / MB:6.1f} MB  "
                    f"fds {fds:3d}  launches {totals.launches:6d}  follows {totals.follows:7d}",
                    flush=True,
                )
                next_line += 60
            time.sleep(_SAMPLE_INTERVAL)  # a sampling period, not a wait for something
        if args.trace:
            os.kill(daemon.pid, signal.SIGUSR2)
            _wait_for_reports(daemon.log_path, reports + 1)
    settled = [(t, rss) for t, rss in samples if t >= args.warm_up * 60]
    print(
        f"{totals.launches} launches, {totals.follows} exact follows, {len(totals.wrong)} wrong; "
        f"RSS {samples[0][1] / MB:.1f} -> {samples[-1][1] / MB:.1f} MB, after "
        f"{args.warm_up:g} min of warm-up {slope_mb_per_minute(settled):+.3f} MB/min"
    )
    for problem in totals.wrong[:5]:
        print(f"  not exact: {problem}")
    if args.trace:
        print(f"memory reports: grep -A40 'memory report' {daemon.log_path}")
    if args.keep or args.trace:
        print(f"kept {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if totals.wrong else 0


def _wait_for_reports(log: Path, count: int) -> None:
    """The last report is written before the daemon stops (a full collection takes a while)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = len(re.findall(r"memory report \d+:", log.read_text(errors="replace")))
        if found >= count:
            return
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
