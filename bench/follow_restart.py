"""Issue 16, item 19: a follower across a daemon crash and restart, run again and again.

Each run: a fresh home, `tailhub daemon start`, a job printing 60 lines over 3 s, one
`tailhub jobs logs --follow` on it; `kill -9` of the daemon one second in, `tailhub daemon
start` half a second later. The follower must end on its own, within `--timeout` seconds, with
the job's exit code and exactly the job's 60 lines on stdout. A follower still running then is
a hang: its stacks (py-spy, when installed) go to the report and the loop stops.

    .venv/bin/python -m bench.follow_restart --runs 200

prints one line per run and a summary; exits 0 only when every run passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.processes import REPO
from harness.waiting import wait_until

LINES = 60
# 60 lines over 3 s, then exit 3 (a code the follower must pass on: 100, failed).
JOB = f"for i in $(seq 1 {LINES}); do echo line $i; sleep 0.05; done; exit 3"
EXPECTED = b"".join(b"line %d\n" % i for i in range(1, LINES + 1))


def _cli(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tailhub.client", "--home", str(home), *args]


def _daemon_pid(home: Path) -> int:
    return int((home / "tailhubd.pid").read_text().split()[0])


def run_once(scratch: Path, index: int, timeout: float) -> str | None:
    """One run; None when it passed, else what went wrong."""
    home = scratch / f"h{index}"
    started = subprocess.run(
        _cli(home, "daemon", "start"), check=False, capture_output=True, timeout=60
    )
    if started.returncode != 0:
        return f"daemon start: {started.stderr.decode(errors='replace')}"
    try:
        task = scratch / "task.yaml"
        task.write_text(f"run: |\n  {JOB}\n")
        launched = subprocess.run(
            _cli(home, "jobs", "launch", "--async", str(task)),
            check=False,
            capture_output=True,
            timeout=60,
            cwd=REPO,
        )
        if launched.returncode != 0:
            return f"launch: {launched.stderr.decode(errors='replace')}"
        launched_at = time.monotonic()
        job_id = launched.stdout.split()[-1].decode()
        out, err = home.parent / f"f{index}.out", home.parent / f"f{index}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            follower = subprocess.Popen(
                _cli(home, "jobs", "logs", "--follow", job_id), stdout=stdout, stderr=stderr
            )
        # One second into the job, and not before the follower has its first line (a loaded
        # machine may take longer than that to start it).
        wait_until(lambda: out.stat().st_size > 0 or follower.poll() is not None, 30, "a line")
        wait_until(lambda: time.monotonic() - launched_at >= 1.0, 5, "one second")
        os.kill(_daemon_pid(home), signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: time.monotonic() - killed >= 0.5, 5, "half a second")
        restarted = subprocess.run(
            _cli(home, "daemon", "start"), check=False, capture_output=True, timeout=60
        )
        if restarted.returncode != 0:
            follower.kill()
            follower.wait()
            return f"restart: {restarted.stderr.decode(errors='replace')}"
        try:
            code = follower.wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = _stacks(follower.pid)
            follower.kill()
            follower.wait()
            return f"the follower was still running after {timeout:.0f}s:\n{stacks}"
        if code != 100 or out.read_bytes() != EXPECTED:
            return (
                f"exit {code}, {len(out.read_bytes())} bytes on stdout "
                f"(want 100, {len(EXPECTED)}); stderr: {err.read_text(errors='replace')}"
            )
        return None
    finally:
        subprocess.run(_cli(home, "daemon", "stop"), check=False, capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def _stacks(pid: int) -> str:
    spy = shutil.which("py-spy")
    if spy is None:
        return "(no py-spy to show its stacks)"
    dump = subprocess.run(
        [spy, "dump", "--pid", str(pid)], check=False, capture_output=True, timeout=60
    )
    fds = sorted(os.listdir(f"/proc/{pid}/fd"), key=int)
    threads = len(os.listdir(f"/proc/{pid}/task"))
    return f"threads {threads}, fds {fds}\n{dump.stdout.decode(errors='replace')}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.follow_restart", description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=30.0, help="per follower (s)")
    args = parser.parse_args()
    # Short: the socket path must stay within 107 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="thfr-", dir="/tmp"))
    failures = 0
    try:
        for index in range(args.runs):
            began = time.monotonic()
            problem = run_once(scratch, index, args.timeout)
            verdict = "ok" if problem is None else f"FAILED: {problem}"
            print(f"run {index + 1}/{args.runs}: {time.monotonic() - began:.1f}s {verdict}")
            sys.stdout.flush()
            if problem is not None:
                failures += 1
                break
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    passed = index + 1 - failures
    print(f"{passed} of {args.runs} runs passed in a row" + ("" if failures else ": all"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
