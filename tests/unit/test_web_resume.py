"""Where a web event stream starts (web/resume.py): Last-Event-ID, tail_lines, ids."""

from __future__ import annotations

import pytest

from tailhub.daemon.web.resume import (
    DEFAULT_TAIL_LINES,
    MAX_MULTI_JOBS,
    MAX_TAIL_LINES,
    format_offsets,
    parse_ids,
    parse_offset,
    parse_offsets,
    parse_tail_lines,
)


def test_a_single_jobs_last_event_id_is_its_offset() -> None:
    assert parse_offset(None) is None
    assert parse_offset("") is None
    assert parse_offset("0") == 0
    assert parse_offset(" 1234 ") == 1234
    assert parse_offset(str(2**63 - 1)) == 2**63 - 1


@pytest.mark.parametrize("text", ["-1", "1e3", "12a", "0x10", str(2**63), "9" * 30, "١٢"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a byte offset"):
        parse_offset(text)


def test_a_multi_job_id_reads_back_as_it_was_written() -> None:
    offsets = {3: 120, 4: 0, 5: 2**40}
    assert parse_offsets(format_offsets(offsets)) == offsets
    assert parse_offsets(None) is None
    assert parse_offsets("  ") is None


@pytest.mark.parametrize("text", ["3", "3:", ":4", "3:1,3:2", "3:1;4:2", "a:1", "3:-1", "3:1,"])
def test_a_malformed_multi_job_id_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="JOB:OFFSET"):
        parse_offsets(text)


def test_an_overlong_multi_job_id_is_refused_unread() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_offsets(",".join(f"{n}:1" for n in range(1, 10_000)))


def test_tail_lines_has_a_default_and_a_cap() -> None:
    assert parse_tail_lines(None) == DEFAULT_TAIL_LINES
    assert parse_tail_lines("0") == 0
    assert parse_tail_lines(str(MAX_TAIL_LINES)) == MAX_TAIL_LINES
    for bad in (str(MAX_TAIL_LINES + 1), "-5", "lots"):
        with pytest.raises(ValueError, match="tail_lines"):
            parse_tail_lines(bad)


def test_ids_are_distinct_job_ids_at_most_fifty() -> None:
    assert parse_ids("3,4, 5,3") == [3, 4, 5]
    for bad in ("", "3,,4", "0", "x", "-1"):
        with pytest.raises(ValueError, match="job ids"):
            parse_ids(bad)
    with pytest.raises(ValueError, match=f"at most {MAX_MULTI_JOBS}"):
        parse_ids(",".join(str(n) for n in range(1, MAX_MULTI_JOBS + 2)))
