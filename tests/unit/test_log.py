"""A job's log (log.py): an append-only file plus a window of its latest bytes in memory."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tailhub.daemon.errors import LogDamaged, StorageFull, UntrustedState
from tailhub.daemon.log import JobLog


def writable_log(path: Path, window_bytes: int = 1024) -> JobLog:
    return JobLog(path, window_bytes, writable=True, size=0, job_id=1)


def test_appended_bytes_are_read_back_exactly_at_their_offsets(tmp_path: Path) -> None:
    log = writable_log(tmp_path / "1.log")
    data = bytes(range(256)) * 4
    log.append(data[:100])
    log.append(data[100:])
    assert log.size == len(data)
    assert log.read(0, len(data)) == data
    assert log.read(300, 5) == data[300:305]
    assert (tmp_path / "1.log").read_bytes() == data


def test_a_read_never_goes_past_what_is_stored(tmp_path: Path) -> None:
    log = writable_log(tmp_path / "1.log")
    log.append(b"hello")
    assert log.read(3, 100) == b"lo"
    assert log.read(5, 100) == b""
    assert log.read(50, 10) == b""


def test_bytes_older_than_the_window_are_read_from_disk(tmp_path: Path) -> None:
    log = writable_log(tmp_path / "1.log", window_bytes=16)
    data = b"".join(b"%04d\n" % number for number in range(100))
    for start in range(0, len(data), 10):
        log.append(data[start : start + 10])
    assert log.read(0, 40) == data[:40]
    assert log.read(len(data) - 8, 8) == data[-8:]


def test_a_failed_append_stores_nothing_and_the_next_one_lands_where_it_should(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = writable_log(tmp_path / "1.log")
    log.append(b"kept\n")
    real_write: Callable[[int, bytes], int] = os.write
    writes: list[int] = []

    def half_then_full(fd: int, data: bytes) -> int:
        writes.append(len(data))
        if len(writes) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(StorageFull, match="disk full at offset 5"):
        log.append(b"lost bytes\n")
    monkeypatch.undo()
    assert log.size == 5
    assert (tmp_path / "1.log").read_bytes() == b"kept\n"
    log.append(b"next\n")
    assert log.read(0, 100) == b"kept\nnext\n"


def test_a_log_written_by_its_job_is_only_observed(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    log = JobLog(path, 1024, writable=False, size=0, job_id=1)
    with pytest.raises(RuntimeError, match="written by its job"):
        log.append(b"x")
    with path.open("ab") as file:  # the job writes its own file
        file.write(b"line one\nline two\n")
    assert log.read(0, 100) == b""  # only observed bytes are served
    log.observe(b"line one\n")
    assert log.read(0, 100) == b"line one\n"


def test_a_log_shorter_on_disk_than_stored_is_reported_damaged(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    log = writable_log(path, window_bytes=8)
    log.append(b"0123456789" * 10)
    os.truncate(path, 20)  # changed behind the daemon's back
    with pytest.raises(LogDamaged, match="shorter than its recorded size"):
        log.read(0, 100)


def test_truncate_cuts_off_bytes_no_follower_was_served(tmp_path: Path) -> None:
    log = writable_log(tmp_path / "1.log")
    log.append(b"whole\npart")
    log.truncate(6)
    assert log.size == 6
    assert log.read(0, 100) == b"whole\n"
    log.append(b"again\n")
    assert (tmp_path / "1.log").read_bytes() == b"whole\nagain\n"


def test_a_planted_symlink_is_never_opened_as_a_log(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_bytes(b"secret")
    (tmp_path / "1.log").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UntrustedState, match="symbolic link"):
        writable_log(tmp_path / "1.log")


def test_an_idle_closed_log_holds_no_descriptor_between_appends(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    log = JobLog(tmp_path / "1.log", 1024, writable=True, size=0, job_id=1, idle_closed=True)
    log.append(b"one\n")
    assert log.read(0, 10) == b"one\n"
    assert len(os.listdir("/proc/self/fd")) == before
    log.append(b"two\n")
    assert (tmp_path / "1.log").read_bytes() == b"one\ntwo\n"


@pytest.mark.parametrize(
    ("lines", "data", "offset"),
    [
        (1, b"a\nb\nc\n", 4),
        (2, b"a\nb\nc\n", 2),
        (2, b"a\nb\nc", 2),  # the last line still being written counts
        (10, b"a\nb\nc\n", 0),
        (0, b"a\nb\n", 4),
    ],
)
def test_the_last_lines_are_found_from_the_end(
    tmp_path: Path, lines: int, data: bytes, offset: int
) -> None:
    log = writable_log(tmp_path / "1.log")
    log.append(data)
    assert asyncio.run(log.tail_offset(lines)) == offset


def test_the_last_line_is_found_behind_megabytes_without_a_newline(tmp_path: Path) -> None:
    log = writable_log(tmp_path / "1.log")
    log.append(b"x" * (3 * 1024 * 1024) + b"\nlast line\n")
    assert log.read(asyncio.run(log.tail_offset(1)), 100) == b"last line\n"
