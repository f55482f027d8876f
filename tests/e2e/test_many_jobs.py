"""Many jobs at once from one CLI: prefixed whole lines, a summary and the worst result; `jobs
wait`; names wherever an id is taken; the queue's ages and colours; the pending status line."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from helpers import BackgroundCli, DaemonProcess, cli_env, run_cli, wait_until
from job_helpers import Gate, jobs, write_task


def _launch(home: Path, workdir: Path, name: str, run: str) -> int:
    """An async launch of a task named `name` running `run`; its id."""
    task = write_task(workdir, f"name: {name}\nrun: |\n  {run}\n", f"{name}.yaml")
    launched = run_cli(home, "jobs", "launch", "--async", str(task))
    assert launched.returncode == 0, launched.stderr
    return int(launched.stdout)


def _ended(daemon: DaemonProcess, *ids: int) -> bool:
    listed = jobs(daemon)
    return all(listed[job_id].state.terminal for job_id in ids)


def test_following_several_jobs_prints_whole_prefixed_lines_a_summary_and_the_worst_result(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    gate = Gate.closed(workdir / "gate")
    try:
        slow = _launch(
            daemon.home,
            workdir,
            "slow",
            f"printf 'par'; flock --shared {gate.path} true; printf 'tial\\n'; exit 3",
        )
        quick = _launch(daemon.home, workdir, "quick", "echo one; echo two")
        tail = _launch(daemon.home, workdir, "tail", "printf 'no newline'")
        wait_until(lambda: _ended(daemon, quick, tail), what="the quick jobs to end")
        follower = background_cli("jobs", "logs", "-f", str(slow), str(quick), str(tail))
        # The follower has been sent the half line, and has written the other jobs' lines...
        wait_until(lambda: jobs(daemon)[slow].bytes_served >= 3, what="'par' sent to it")
        wait_until(lambda: b"two" in follower.stdout, what="the quick job's lines")
        # ...but not the half line: it waits for the rest.
        assert b"par" not in follower.stdout
        gate.open()
        assert follower.wait() == 100, follower.stderr
    finally:
        gate.open()

    width = len(f"quick-{quick}")
    lines = follower.stdout.decode().splitlines(keepends=True)
    assert sorted(lines) == sorted(
        [
            f"{f'slow-{slow}':<{width}} | partial\n",
            f"{f'quick-{quick}':<{width}} | one\n",
            f"{f'quick-{quick}':<{width}} | two\n",
            f"{f'tail-{tail}':<{width}} | no newline\n",
        ]
    )
    assert lines.index(f"{f'quick-{quick}':<{width}} | one\n") < lines.index(
        f"{f'quick-{quick}':<{width}} | two\n"
    )
    assert f"tailhub: job {slow} (slow) failed: run exited with 3\n" in follower.stderr
    assert follower.stderr.endswith(f"tailhub: 2 succeeded, 1 failed: {slow} (slow)\n")


def test_one_job_without_flags_is_still_its_exact_bytes(
    daemon: DaemonProcess, workdir: Path
) -> None:
    job = _launch(daemon.home, workdir, "exact", "printf 'a\\r\\nno newline'")
    single = run_cli(daemon.home, "jobs", "logs", str(job))
    prefixed = run_cli(daemon.home, "jobs", "logs", "--prefix", str(job))

    assert (single.returncode, single.stdout) == (0, b"a\r\nno newline")
    assert b"succeeded" not in single.stderr
    assert prefixed.stdout == f"exact-{job} | a\r\nexact-{job} | no newline\n".encode()
    assert prefixed.stderr == b"tailhub: 1 succeeded\n"


def test_all_follows_every_unfinished_job_and_name_picks_by_glob(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    done = _launch(daemon.home, workdir, "old", "echo old")
    wait_until(lambda: _ended(daemon, done), what="the old job to end")
    gate = Gate.closed(workdir / "gate")
    try:
        waiting = [
            _launch(
                daemon.home, workdir, f"train-{n}", f"flock --shared {gate.path} true; echo {n}"
            )
            for n in (1, 2)
        ]
        with daemon.client() as client:
            cancelled = client.attach_push("eval").id
        everything = background_cli("jobs", "logs", "--all", "--no-prefix")
        by_name = background_cli("jobs", "logs", "--name", "train-*")
        wait_until(
            lambda: jobs(daemon)[cancelled].subscribers == 1, what="--all to follow the eval job"
        )
        assert run_cli(daemon.home, "jobs", "cancel", "eval").returncode == 0
        gate.open()
        assert everything.wait() == 103, everything.stderr
        assert by_name.wait() == 0, by_name.stderr
    finally:
        gate.open()

    assert sorted(everything.stdout.splitlines()) == [b"1", b"2"]
    assert everything.stderr.endswith(f"tailhub: 2 succeeded, 1 cancelled: {cancelled} (eval)\n")
    assert sorted(by_name.stdout.decode().splitlines()) == [
        f"train-1-{waiting[0]} | 1",
        f"train-2-{waiting[1]} | 2",
    ]


def test_wait_prints_no_log_only_the_summary_and_exits_with_the_worst(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    gate = Gate.closed(workdir / "gate")
    try:
        good = _launch(
            daemon.home, workdir, "good", f"echo before; flock --shared {gate.path} true; echo ok"
        )
        bad = _launch(daemon.home, workdir, "bad", f"flock --shared {gate.path} true; exit 4")
        wait_until(lambda: jobs(daemon)[good].log_size == len(b"before\n"), what="'before'")
        waiter = background_cli("jobs", "wait", str(good), "bad", "999")
        everything = background_cli("jobs", "wait", "--all")
        wait_until(lambda: jobs(daemon)[bad].subscribers == 2, what="both waiters to subscribe")
        assert waiter.process.poll() is None
        gate.open()
        assert waiter.wait() == 102, waiter.stderr
        assert everything.wait() == 100, everything.stderr
    finally:
        gate.open()

    assert waiter.stdout == everything.stdout == b""
    assert waiter.stderr.endswith(
        f"tailhub: 1 succeeded, 1 failed: {bad} (bad); 1 not found: 999\n"
    )
    assert everything.stderr.endswith(f"tailhub: 1 succeeded, 1 failed: {bad} (bad)\n")
    # Each waiter started at the end of the log: what was written before was never sent.
    assert jobs(daemon)[good].bytes_served == 2 * len(b"ok\n")


def test_a_unique_name_works_where_an_id_does_and_others_are_refused(
    daemon: DaemonProcess, workdir: Path
) -> None:
    first = _launch(daemon.home, workdir, "dup", "echo first")
    second = _launch(daemon.home, workdir, "dup", "echo second")
    with daemon.client() as client:
        pushed = client.attach_push("feed").id
        client.attach_push("999")
    latest = _launch(daemon.home, workdir, "last", "echo latest")
    wait_until(lambda: _ended(daemon, first, second, latest), what="the jobs to end")

    published = run_cli(daemon.home, "jobs", "publish", "feed", input=b"pushed\n")
    finished = run_cli(daemon.home, "jobs", "finish", "feed")
    by_name = run_cli(daemon.home, "jobs", "logs", "feed")
    no_id = run_cli(daemon.home, "jobs", "logs")
    ambiguous = run_cli(daemon.home, "jobs", "logs", "dup")
    unknown = run_cli(daemon.home, "jobs", "logs", "nosuch")
    # A name as long as a command line allows: refused in one short line.
    huge = run_cli(daemon.home, "jobs", "logs", "n" * 100_000)
    as_id = run_cli(daemon.home, "jobs", "logs", "999")
    removed = run_cli(daemon.home, "jobs", "rm", "last")

    assert (published.returncode, finished.returncode) == (0, 0), published.stderr
    assert (by_name.returncode, by_name.stdout) == (0, b"pushed\n")
    assert (no_id.returncode, no_id.stdout) == (0, b"latest\n")
    assert ambiguous.returncode == 2
    assert f"2 jobs are named 'dup' ({first}, {second})" in ambiguous.stderr.decode()
    assert unknown.returncode == 102
    assert "no job named 'nosuch'" in unknown.stderr.decode()
    assert huge.returncode == 102
    assert len(huge.stderr) < 200, huge.stderr[:300]
    # Digits are an id, even when a job is named so.
    assert as_id.returncode == 102
    assert "job 999 not found" in as_id.stderr.decode()
    assert removed.returncode == 0, removed.stderr
    assert latest not in jobs(daemon)
    assert pushed in jobs(daemon)


def test_a_failed_synchronous_launch_names_its_job(daemon: DaemonProcess, workdir: Path) -> None:
    task = write_task(workdir, "name: train\nrun: exit 3\n")
    launched = run_cli(daemon.home, "jobs", "launch", str(task))
    job_id = next(iter(jobs(daemon)))

    assert launched.returncode == 100
    assert f"tailhub: job {job_id} (train) failed: run exited with 3\n" in launched.stderr.decode()


def test_queue_shows_ages_durations_skips_finished_and_gives_iso_times(
    daemon: DaemonProcess, workdir: Path
) -> None:
    gate = Gate.closed(workdir / "gate")
    try:
        done = _launch(daemon.home, workdir, "done", "echo done")
        wait_until(lambda: _ended(daemon, done), what="the first job to end")
        running = _launch(daemon.home, workdir, "running", f"flock --shared {gate.path} true")
        wait_until(lambda: jobs(daemon)[running].state.value == "RUNNING", what="it to run")
        table = run_cli(daemon.home, "jobs", "queue")
        skipping = run_cli(daemon.home, "jobs", "queue", "--skip-finished")
        as_json = run_cli(daemon.home, "jobs", "queue", "--json")
    finally:
        gate.open()

    header, *rows = table.stdout.decode().splitlines()
    assert header.split()[:4] == ["ID", "NAME", "STATE", "EXIT"]
    assert header.split()[8:10] == ["SUBMITTED", "DURATION"]
    assert [row.split()[0] for row in rows] == [str(running), str(done)]  # newest first
    for row in rows:
        assert re.search(r"\s\d+s ago\s+\d+s\s", row), row
    assert "\x1b" not in table.stdout.decode()  # no colour in a pipe
    assert [row.split()[0] for row in skipping.stdout.decode().splitlines()[1:]] == [str(running)]
    listed = {job["id"]: job for job in json.loads(as_json.stdout)}
    assert listed[running]["ended_at_iso"] is None
    for key in ("submitted_at", "started_at", "ended_at"):
        parsed = datetime.fromisoformat(listed[done][f"{key}_iso"])
        assert abs(parsed.timestamp() - listed[done][key]) < 0.001


def test_cancel_all_with_yes_asks_nothing(daemon: DaemonProcess, workdir: Path) -> None:
    gate = Gate.closed(workdir / "gate")
    try:
        job = _launch(daemon.home, workdir, "long", f"flock --shared {gate.path} true")
        cancelled = run_cli(daemon.home, "jobs", "cancel", "-a", "-y")
    finally:
        gate.open()
    assert cancelled.returncode == 0, cancelled.stderr
    assert jobs(daemon)[job].state.value == "CANCELLED"


def _read_pty(fd: int, until: Callable[[bytes], bool], seen: bytearray, timeout: float) -> None:
    """Reads a terminal's output into `seen` until `until(seen)` holds."""
    deadline = time.monotonic() + timeout
    while not until(bytes(seen)):
        assert time.monotonic() < deadline, f"timed out; terminal so far: {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the other side closed: nothing more will come
                assert until(bytes(seen)), f"terminal closed with: {bytes(seen)!r}"


def test_a_pending_launch_shows_a_status_line_on_a_terminal_and_nothing_when_piped(
    start_daemon: Callable[..., DaemonProcess],
    workdir: Path,
    background_cli: Callable[..., BackgroundCli],
) -> None:
    daemon = start_daemon("--max-running-jobs", "1")
    gate = Gate.closed(workdir / "gate")
    controller, terminal = pty.openpty()
    try:
        blocker = _launch(daemon.home, workdir, "blocker", f"flock --shared {gate.path} true")
        task = write_task(workdir, "name: later\nrun: echo started\n")
        piped = background_cli("jobs", "launch", str(task))
        wait_until(lambda: len(jobs(daemon)) == 2, what="the piped launch to submit")
        on_terminal = subprocess.Popen(
            [sys.executable, "-m", "tailhub.client", "jobs", "launch", str(task)],
            env=cli_env(daemon.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        seen = bytearray()
        line = f"job {blocker + 2} pending: 1 job ahead".encode()
        # Shown, then refreshed at a heartbeat (so the piped launch also saw one).
        _read_pty(controller, lambda out: out.count(line) >= 2, seen, 20)
        gate.open()
        stdout, _ = on_terminal.communicate(timeout=60)
        _read_pty(controller, lambda out: out.endswith(b"\x1b[2K"), seen, 20)
        assert on_terminal.returncode == 0
        assert piped.wait() == 0
    finally:
        gate.open()
        os.close(controller)

    assert stdout == b"started\n"
    # Cleared in place once the job started: the last thing on the terminal is the erase.
    assert bytes(seen).endswith(line + b"\r\x1b[2K")
    assert "pending" not in piped.stderr
    assert "\x1b" not in piped.stderr


def test_completion_offers_job_ids_and_names_and_never_starts_a_daemon(
    daemon: DaemonProcess, workdir: Path, tmp_path: Path
) -> None:
    job = _launch(daemon.home, workdir, "trainer", "true")

    def complete(home: Path, word: str) -> str:
        env = cli_env(home) | {
            "_TAILHUB_COMPLETE": "bash_complete",
            "COMP_WORDS": f"tailhub jobs logs {word}",
            "COMP_CWORD": "3",
        }
        done = subprocess.run(
            [sys.executable, "-m", "tailhub.client"], env=env, capture_output=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == b""
        return done.stdout.decode()

    assert f"plain,{job}\n" in complete(daemon.home, "")
    assert complete(daemon.home, "tra") == "plain,trainer\n"
    nowhere = tmp_path / "nowhere"
    assert complete(nowhere, "").strip() == ""
    assert not nowhere.exists()


def test_cancel_all_asks_first_on_a_terminal(daemon: DaemonProcess, workdir: Path) -> None:
    gate = Gate.closed(workdir / "gate")
    controller, terminal = pty.openpty()
    try:
        job = _launch(daemon.home, workdir, "long", f"flock --shared {gate.path} true")
        os.write(controller, b"n\n")
        refused = subprocess.run(
            [sys.executable, "-m", "tailhub.client", "jobs", "cancel", "--all"],
            env=cli_env(daemon.home),
            stdin=terminal,
            capture_output=True,
            timeout=60,
        )
        state = jobs(daemon)[job].state.value
    finally:
        gate.open()
        os.close(controller)
        os.close(terminal)

    assert refused.returncode == 1
    assert b"Cancel all 1 unfinished job?" in refused.stderr
    assert refused.stderr.endswith(b"tailhub: nothing cancelled\n")
    assert state == "RUNNING"


def _on_terminal(home: Path, *args: str) -> bytes:
    """What `tailhub ARGS` writes to stdout when stdout is a terminal."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "tailhub.client", *args],
            env=cli_env(home),
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.DEVNULL,
        )
        os.close(terminal)
        seen = bytearray()
        while True:
            try:
                data = os.read(controller, 4096)  # blocks; EIO once the process is gone
            except OSError:
                break
            if not data:
                break
            seen += data
        assert process.wait(30) is not None
        return bytes(seen)
    finally:
        os.close(controller)


def test_prefixes_and_states_are_coloured_only_on_a_terminal(
    daemon: DaemonProcess, workdir: Path
) -> None:
    ok = _launch(daemon.home, workdir, "ok", "echo fine")
    bad = _launch(daemon.home, workdir, "bad", "exit 1")
    wait_until(lambda: _ended(daemon, ok, bad), what="the jobs to end")

    logs = _on_terminal(daemon.home, "jobs", "logs", str(ok), str(bad))
    table = _on_terminal(daemon.home, "jobs", "queue")
    piped = run_cli(daemon.home, "jobs", "queue")

    assert b"\x1b[36m" + f"ok-{ok}  | ".encode() + b"\x1b[0mfine" in logs
    assert b"\x1b[32mSUCCEEDED" in table
    assert b"\x1b[31mFAILED" in table
    assert b"\x1b" not in piped.stdout


def test_ctrl_c_stops_following_many_jobs_not_the_jobs(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    gate = Gate.closed(workdir / "gate")
    try:
        ids = [
            _launch(daemon.home, workdir, f"w{n}", f"echo up; flock --shared {gate.path} true")
            for n in (1, 2)
        ]
        follower = background_cli("jobs", "logs", *map(str, ids))
        wait_until(lambda: follower.stdout.count(b"| up\n") == 2, what="both jobs' first line")
        follower.process.send_signal(signal.SIGINT)
        assert follower.wait() == 130
        states = {job_id: jobs(daemon)[job_id].state.value for job_id in ids}
    finally:
        gate.open()

    assert follower.stderr == "tailhub: stopped following; the jobs go on\n"
    assert set(states.values()) == {"RUNNING"}


def test_a_prefixed_line_longer_than_1_mib_is_written_before_it_ends(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    with daemon.client() as client:
        job_id = client.attach_push("long").id
        client.publish(job_id, b"x" * (1536 * 1024))
    follower = background_cli("jobs", "logs", "-f", "--prefix", str(job_id))
    # Not held until a newline that may never come: memory stays bounded.
    wait_until(lambda: len(follower.stdout) >= 1024 * 1024, what="the first MiB")
    with daemon.client() as client:
        client.publish(job_id, b"y\n")
        client.finish(job_id, 0)
    assert follower.wait() == 0, follower.stderr
    pieces = follower.stdout.split(b"\n")[:-1]
    assert len(pieces) == 2
    assert all(piece.startswith(f"long-{job_id} | ".encode()) for piece in pieces)
    assert b"".join(piece.split(b" | ", 1)[1] for piece in pieces) == b"x" * (1536 * 1024) + b"y"


def test_jobs_that_do_not_exist_are_said_at_once_and_still_ranked_in_the_summary(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    gate = Gate.closed(workdir / "gate")
    try:
        running = _launch(daemon.home, workdir, "long", f"flock --shared {gate.path} true")
        follower = background_cli("jobs", "logs", "-f", str(running), "999", "train-x")
        # Said while the real job still runs, not when everything has ended.
        wait_until(
            lambda: (
                "job 999 not found" in follower.stderr
                and "no job named 'train-x'" in follower.stderr
            ),
            what="both missing jobs said on stderr",
        )
        assert follower.process.poll() is None
        assert not jobs(daemon)[running].state.terminal
        gate.open()
        assert follower.wait() == 102, follower.stderr
    finally:
        gate.open()
    assert follower.stderr.endswith("tailhub: 1 succeeded, 2 not found: 999, 'train-x'\n"), (
        follower.stderr
    )


def test_completion_never_prints_a_job_names_control_characters(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        job = client.attach_push("evil\x1b]0;pwned\x07").id
    for shell in ("bash_complete", "zsh_complete"):
        env = cli_env(daemon.home) | {
            "_TAILHUB_COMPLETE": shell,
            "COMP_WORDS": "tailhub jobs logs ",
            "COMP_CWORD": "3",
        }
        done = subprocess.run(
            [sys.executable, "-m", "tailhub.client"], env=env, capture_output=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert str(job).encode() in done.stdout  # the job is offered by its id...
        assert b"\x1b" not in done.stdout
        assert b"\x07" not in done.stdout
