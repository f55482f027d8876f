"""When a job's bytes reached the daemon (timeindex.py): marks on disk, read by subscribers."""

from __future__ import annotations

import os
from pathlib import Path

from tailhub.daemon.timeindex import RESOLUTION, TimeIndex, line_start_from


def test_each_byte_takes_the_time_of_the_mark_in_effect_where_it_lies(tmp_path: Path) -> None:
    index = TimeIndex(tmp_path / "1.times")
    index.record(0, 1000.0)
    index.record(10, 1001.0)
    index.record(25, 1002.0)
    assert index.time_at(0) == 1000.0
    assert index.time_at(9) == 1000.0
    assert index.time_at(10) == 1001.0
    assert index.time_at(500) == 1002.0


def test_a_flood_of_tiny_appends_adds_at_most_one_mark_per_resolution(tmp_path: Path) -> None:
    index = TimeIndex(tmp_path / "1.times")
    for offset in range(100):
        index.record(offset, 1000.0 + offset * RESOLUTION / 10)
    assert len(index.marks_in(0, 100)) <= 11
    last = index.time_at(99)
    assert last is not None
    assert last <= 1000.0 + 99 * RESOLUTION / 10  # never later than it came


def test_marks_survive_a_restart_and_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "1.times"
    index = TimeIndex(path)
    index.record(0, 1000.0)
    index.record(10, 1001.0)
    with path.open("ab") as file:
        file.write(b"\x01\x02\x03")  # a daemon killed mid-write
    reopened = TimeIndex(path)
    assert reopened.time_at(15) == 1001.0
    reopened.record(20, 1002.0)  # built on whole records only
    assert TimeIndex(path).marks_in(0, 100) == [(0, 1000.0), (10, 1001.0), (20, 1002.0)]


def test_marks_in_a_range_start_with_the_mark_in_effect_moved_to_its_start(
    tmp_path: Path,
) -> None:
    index = TimeIndex(tmp_path / "1.times")
    index.record(0, 1000.0)
    index.record(10, 1001.0)
    index.record(20, 1002.0)
    assert index.marks_in(5, 20) == [(5, 1000.0), (10, 1001.0)]
    assert TimeIndex(tmp_path / "none.times").marks_in(0, 10) == []


def test_a_log_cut_back_after_a_crash_supersedes_the_marks_past_the_cut(tmp_path: Path) -> None:
    index = TimeIndex(tmp_path / "1.times")
    index.record(0, 1000.0)
    index.record(50, 1001.0)
    index.record(30, 1002.0)  # the log was cut back to 30 and grew again
    assert index.marks_in(0, 100) == [(0, 1000.0), (30, 1002.0)]
    assert TimeIndex(tmp_path / "1.times").marks_in(0, 100) == [(0, 1000.0), (30, 1002.0)]


def test_the_first_offset_since_a_time_is_the_first_mark_at_or_after_it(tmp_path: Path) -> None:
    index = TimeIndex(tmp_path / "1.times")
    index.record(0, 1000.0)
    index.record(10, 1001.0)
    assert index.first_offset_since(999.0) == 0
    assert index.first_offset_since(1000.5) == 10
    assert index.first_offset_since(1001.0) == 10
    assert index.first_offset_since(1002.0) is None


def test_a_line_counts_from_when_its_first_byte_came(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"one\ntwo\nthree")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert line_start_from(fd, 0, 13) == 0
        assert line_start_from(fd, 4, 13) == 4  # a line start
        assert line_start_from(fd, 5, 13) == 8  # inside "two": the next line
        assert line_start_from(fd, 10, 13) == 8  # "three" is still being written: kept whole
        assert line_start_from(fd, 20, 13) == 13
    finally:
        os.close(fd)
