"""`tailhub jobs show JOB` and `tailhub jobs queue --watch`, as a user runs them."""

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
from pathlib import Path

from helpers import DaemonProcess, cli_env, run_cli, wait_until


def _file_job(daemon: DaemonProcess, workdir: Path) -> tuple[int, Path]:
    log = workdir / "app.log"
    log.write_bytes(b"first line\nsecond line\n")
    with daemon.client() as client:
        job_id = client.attach_file(str(log), name="app").id
        wait_until(lambda: client.get(job_id).log_size == 23, 20, "the file read")
    return job_id, log


def test_show_tells_the_record_reason_and_events(daemon: DaemonProcess, workdir: Path) -> None:
    job_id, log = _file_job(daemon, workdir)
    # Truncated under the follower: the daemon keeps a source event saying so.
    log.write_bytes(b"x\n")
    with daemon.client() as client:
        wait_until(lambda: client.get_with_events(job_id)[1], 20, "the truncation's event")
        client.finish(job_id, exit_code=3, reason="it broke")

    shown = run_cli(daemon.home, "jobs", "show", "app")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    record_lines = text.split("\nevents (", 1)[0].splitlines()
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in record_lines)
    assert fields["job"] == str(job_id)
    assert fields["state"] == "FAILED (exit code 3)"
    assert fields["reason"] == "it broke"
    assert fields["source"].startswith(f"file {log}")
    assert "followers" in fields
    assert "ended" in text
    events = text.split("events (", 1)[1].splitlines()[1:]
    assert len(events) >= 1
    assert "trunc" in events[0].lower()

    as_json = run_cli(daemon.home, "jobs", "show", str(job_id), "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    record = json.loads(as_json.stdout)
    assert (record["id"], record["state"], record["exit_code"]) == (job_id, "FAILED", 3)
    assert record["reason"] == "it broke"
    assert record["events"][0]["offset"] == 23
    assert "trunc" in record["events"][0]["message"].lower()
    assert record["ended_at_iso"] is not None


def test_show_of_an_unknown_job_is_a_clear_error(daemon: DaemonProcess) -> None:
    missing = run_cli(daemon.home, "jobs", "show", "999")
    assert missing.returncode == 102
    text = missing.stderr.decode()
    assert "Traceback" not in text
    assert "999" in text
    assert text.count("\n") == 1, text
    named = run_cli(daemon.home, "jobs", "show", "no-such-name")
    assert named.returncode == 102
    assert "no-such-name" in named.stderr.decode()


def _read_until(fd: int, wanted: bytes, count: int, timeout: float = 30.0) -> bytes:
    """What the pty showed until `wanted` appeared `count` times."""
    seen = b""
    deadline = time.monotonic() + timeout
    while seen.count(wanted) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{count} x {wanted!r} not shown; have {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the other side closed
                break
    return seen


def test_queue_watch_redraws_in_place_and_ends_cleanly_on_ctrl_c(
    daemon: DaemonProcess, workdir: Path
) -> None:
    job_id, _ = _file_job(daemon, workdir)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "tailhub.client", "jobs", "queue", "--watch", "--interval", "0.2"],
        env=cli_env(daemon.home),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    try:
        shown = _read_until(leader, b"\x1b[H\x1b[2J", 3)
        # Each frame clears the screen and draws the whole table again, the job in it.
        frames = shown.split(b"\x1b[H\x1b[2J")[1:3]
        for frame in frames:
            assert b"ID" in frame
            assert f"{job_id} ".encode() in frame
            assert b"app" in frame
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        rest = b""
        while True:
            try:
                more = os.read(leader, 65536)
            except OSError:
                break
            if not more:
                break
            rest += more
        assert b"Traceback" not in shown + rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        os.close(leader)


def test_queue_watch_on_a_pipe_prints_whole_tables_apart(
    daemon: DaemonProcess, workdir: Path
) -> None:
    job_id, _ = _file_job(daemon, workdir)
    process = subprocess.Popen(
        [sys.executable, "-m", "tailhub.client", "jobs", "queue", "-w", "-n", "0.2"],
        env=cli_env(daemon.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines: list[bytes] = []
        while sum(line.startswith(b"every ") for line in lines) < 3:
            line = process.stdout.readline()
            assert line, "the watch ended by itself"
            lines.append(line)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    assert process.returncode == 0, err
    text = b"".join(lines).decode()
    assert "\x1b" not in text
    frames = text.split("\n\n")
    assert len(frames) >= 3
    for frame in frames[:2]:
        rows = frame.strip().splitlines()
        assert rows[0].startswith("every 0.2s: tailhub jobs queue")
        assert rows[1].split()[:3] == ["ID", "NAME", "STATE"]
        assert rows[2].split()[:2] == [str(job_id), "app"]
    assert b"Traceback" not in err
