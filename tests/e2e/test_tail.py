"""`tailhub jobs logs --tail N` and `--no-follow`: the end of a log, without reading all of it."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until
from markers import measures

from tailhub.client import JobState

GIB = 1024 * 1024 * 1024
RESULT_LINES = 2000
ATTEMPTS = 3
# What the daemon may read to find and send the last lines: a few blocks, not the GiB. (How fast
# that answers is a figure for bench/, not a bound here: a loaded machine only adds time.)
READ_AT_MOST = 16 * 1024 * 1024

# A job whose log is a GiB of chatter, written in big blocks (cheaply), then its results.
_FILLER = b"filler: the same line again and again, until the log holds a GiB\n"
_CHATTER = f"""\
import sys
line = {_FILLER!r}
block = line * (16 * 1024 * 1024 // len(line))
for _ in range({GIB} // len(block) + 1):
    sys.stdout.buffer.write(block)
"""
_RUN = f"""\
{shlex.quote(sys.executable)} -c {shlex.quote(_CHATTER)}
seq -f 'result line %g' 1 {RESULT_LINES}
"""


def _bytes_read_by(pid: int) -> int:
    """Bytes the process has read through read(2) and friends, from files and pipes alike."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def _last_lines(count: int) -> bytes:
    """The last `count` lines of that job's log."""
    results = [b"result line %d\n" % n for n in range(1, RESULT_LINES + 1)]
    fillers = [_FILLER] * max(0, count - RESULT_LINES)
    return b"".join([*fillers, *results][-count:])


@measures
def test_tail_of_a_one_gib_log_reads_only_its_end_and_gives_exactly_the_last_lines(
    daemon: DaemonProcess, workdir: Path
) -> None:
    with daemon.client() as client:
        job = client.launch(_RUN, name="chatty", workdir=str(workdir))
        wait_until(lambda: client.get(job.id).sealed, 180, "the GiB job to end")
        ended = client.get(job.id)
        assert ended.state is JobState.SUCCEEDED
        assert ended.log_size > GIB

        for lines in (10, RESULT_LINES + 3):
            timings = []
            for _ in range(ATTEMPTS):
                served_before = client.get(job.id).bytes_served
                read_before = _bytes_read_by(daemon.pid)
                started = time.monotonic()
                tail = run_cli(daemon.home, "jobs", "logs", str(job.id), "--tail", str(lines))
                timings.append(time.monotonic() - started)
                assert tail.returncode == 0, tail.stderr
                assert tail.stdout == _last_lines(lines)
                # It seeks: the daemon reads the end of the log and sends the tail, nothing else.
                read = _bytes_read_by(daemon.pid) - read_before
                assert read < READ_AT_MOST, f"the daemon read {read} bytes for --tail {lines}"
                assert client.get(job.id).bytes_served - served_before == len(tail.stdout)
            # Other processes on the machine only ever add time: the best attempt is the cost.
            print(f"--tail {lines} of a {ended.log_size / GIB:.2f} GiB log: {min(timings):.2f}s")


def test_logs_without_follow_of_a_running_job_prints_what_is_there_and_exits_101(
    daemon: DaemonProcess, workdir: Path
) -> None:
    log = workdir / "server.log"
    log.write_bytes(b"listening on :8080\nGET / 200\nGET /health 200\n")
    attached = run_cli(daemon.home, "jobs", "attach", "--file", str(log))
    assert attached.returncode == 0, attached.stderr
    job_id = attached.stdout.decode().strip()
    with daemon.client() as client:
        wait_until(lambda: client.get(int(job_id)).log_size == log.stat().st_size, what="fetch")

        so_far = run_cli(daemon.home, "jobs", "logs", job_id, "--no-follow")
        assert so_far.returncode == 101, so_far.stderr  # not finished
        assert so_far.stdout == b"listening on :8080\nGET / 200\nGET /health 200\n"

        last = run_cli(daemon.home, "jobs", "logs", job_id, "--no-follow", "--tail", "1")
        assert last.returncode == 101, last.stderr
        assert last.stdout == b"GET /health 200\n"

        # The job goes on: nothing about it changed because someone looked.
        with log.open("ab") as handle:
            handle.write(b"GET /slow 200")
        wait_until(lambda: client.get(int(job_id)).log_size == log.stat().st_size, what="fetch")
        assert client.get(int(job_id)).state is JobState.RUNNING
    later = run_cli(daemon.home, "jobs", "logs", job_id, "--no-follow", "--tail", "2")
    assert later.returncode == 101, later.stderr
    assert later.stdout == b"GET /health 200\nGET /slow 200"

    finished = run_cli(daemon.home, "jobs", "finish", job_id)
    assert finished.returncode == 0, finished.stderr
    done = run_cli(daemon.home, "jobs", "logs", job_id, "--no-follow")
    assert done.returncode == 0, done.stderr
    assert done.stdout == log.read_bytes()


def test_tail_zero_prints_nothing_of_the_log_and_then_only_new_bytes(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    log = workdir / "app.log"
    log.write_bytes(b"old line 1\nold line 2\n")
    attached = run_cli(daemon.home, "jobs", "attach", "--file", str(log))
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)
    with daemon.client() as client:
        wait_until(lambda: client.get(job_id).log_size == log.stat().st_size, what="fetch")

        nothing = run_cli(daemon.home, "jobs", "logs", str(job_id), "--tail", "0", "--no-follow")
        assert nothing.returncode == 101, nothing.stderr
        assert nothing.stdout == b""

        follower = background_cli("jobs", "logs", str(job_id), "--tail", "0", "--follow")
        wait_until(lambda: client.get(job_id).subscribers == 1, what="the follower to subscribe")
        with log.open("ab") as handle:
            handle.write(b"new line\n")
        follower.wait_for_stdout(b"new line\n")
    finished = run_cli(daemon.home, "jobs", "finish", str(job_id))
    assert finished.returncode == 0, finished.stderr
    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == b"new line\n"
