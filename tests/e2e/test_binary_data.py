"""Log bytes are bytes: nothing on the way from a file to a follower's stdout decodes them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until

from tailhub.client import JobState, LogChunk, LogEnd

EVERY_BYTE = bytes(range(256))
PROGRESS = b"".join(b"\rdownloading %3d%% [%-20s]" % (p, b"#" * (p // 5)) for p in range(101))
# Ten MiB without a single newline, and no newline after it either: the log ends mid-line.
HUGE_LINE = os.urandom(10 * 1024 * 1024).replace(b"\n", b"\xff")


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def test_every_byte_value_a_huge_line_and_carriage_returns_pass_unchanged(
    daemon: DaemonProcess, workdir: Path, background_cli: Callable[..., BackgroundCli]
) -> None:
    log = workdir / "binary.log"
    log.write_bytes(b"")
    attached = run_cli(daemon.home, "jobs", "attach", "--file", str(log))
    assert attached.returncode == 0, attached.stderr
    job_id = attached.stdout.decode().strip()
    # A follower from the start sees the bytes arrive piece by piece, as a terminal would.
    live = background_cli("jobs", "logs", job_id)
    with daemon.client() as client:
        wait_until(lambda: client.get(int(job_id)).subscribers == 1, what="the follower")
        pieces = [EVERY_BYTE, b"\n", EVERY_BYTE * 64, b"\r\n"]
        pieces += [PROGRESS[i : i + 37] for i in range(0, len(PROGRESS), 37)]
        pieces += [b"\r\x00\x1b[2K\x1b[1Gdone\r\n", HUGE_LINE]
        for piece in pieces:
            _append(log, piece)
        expected = b"".join(pieces)
        wait_until(lambda: client.get(int(job_id)).log_size == len(expected), what="the fetch")
        finished = run_cli(daemon.home, "jobs", "finish", job_id)
        assert finished.returncode == 0, finished.stderr

        live.wait_for_stdout(expected, 60)
        assert live.wait() == 0, live.stderr

        # A follower that arrives later reads the same bytes back from the daemon's log.
        replay = run_cli(daemon.home, "jobs", "logs", job_id)
        assert replay.returncode == 0, replay.stderr
        assert replay.stdout == expected

        # The library hands out the same bytes, at contiguous offsets.
        chunks: list[bytes] = []
        end = None
        for item in client.follow(int(job_id)):
            if isinstance(item, LogChunk):
                assert item.offset == sum(len(chunk) for chunk in chunks)
                chunks.append(item.data)
            elif isinstance(item, LogEnd):
                end = item
        assert b"".join(chunks) == expected
        assert end is not None
        assert (end.state, end.exit_code, end.log_size) == (
            JobState.SUCCEEDED,
            0,
            len(expected),
        )

    # The last line has no newline and is ten MiB long: `--tail 1` still returns it whole.
    last = run_cli(daemon.home, "jobs", "logs", job_id, "--tail", "1")
    assert last.returncode == 0, last.stderr
    assert last.stdout == HUGE_LINE


def test_carriage_return_updates_reach_a_follower_as_they_are_written(
    daemon: DaemonProcess, workdir: Path
) -> None:
    """A progress bar redraws with `\\r`: each update is visible before the next line ends."""
    log = workdir / "progress.log"
    log.write_bytes(b"fetching weights\n")
    attached = run_cli(daemon.home, "jobs", "attach", "--file", str(log))
    assert attached.returncode == 0, attached.stderr
    job_id = int(attached.stdout)
    with daemon.client() as client:
        stream = client.follow(job_id)
        received = b""

        def receive_until(wanted: bytes) -> None:
            # Heartbeats (every 0.5 s here) wake the loop, so the deadline is checked.
            nonlocal received
            deadline = time.monotonic() + 10
            while not received.endswith(wanted):
                assert time.monotonic() < deadline, f"{wanted!r} never arrived: {received!r}"
                item = next(stream)
                if isinstance(item, LogChunk):
                    received += item.data

        receive_until(b"fetching weights\n")
        for percent in (0, 25, 50, 75, 100):
            update = b"\r%3d%%" % percent
            _append(log, update)
            receive_until(update)  # arrives on its own, no newline needed to flush it
        finished = client.finish(job_id)
        assert finished.state is JobState.SUCCEEDED
        rest = list(stream)
    assert received == b"fetching weights\n\r  0%\r 25%\r 50%\r 75%\r100%"
    assert [item for item in rest if isinstance(item, LogChunk)] == []
    assert isinstance(rest[-1], LogEnd)
    assert rest[-1].state is JobState.SUCCEEDED
