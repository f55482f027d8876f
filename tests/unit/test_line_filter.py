"""The line filter (SubscribeRequest.grep/exclude): whole matching lines at their log offsets,
however the log is cut into chunks, in time linear in the line."""

from __future__ import annotations

import bisect
import random
import re
import time
from collections.abc import Sequence

import pytest

from tailhub.daemon.errors import InvalidRequest
from tailhub.daemon.line_filter import JUDGED, MAX_PIECE, LineFilter, Piece


def make(grep: Sequence[str] = (), exclude: Sequence[str] = ()) -> LineFilter:
    line_filter = LineFilter.compile(grep, exclude)
    assert line_filter is not None
    return line_filter


def run(line_filter: LineFilter, log: bytes, cuts: Sequence[int], *, ended: bool) -> list[Piece]:
    """Feeds `log` cut at `cuts`, then flushes when the job has `ended`."""
    pieces: list[Piece] = []
    bounds = [0, *sorted(cuts), len(log)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        if end > start:
            pieces += line_filter.feed(start, log[start:end])
    if ended:
        pieces += line_filter.flush()
    return pieces


def expected(line_filter: LineFilter, log: bytes, *, ended: bool) -> dict[int, bytes]:
    """Each passing line by its offset, judged the plain way: the whole log split at once."""
    lines: dict[int, bytes] = {}
    offset = 0
    # Not splitlines: it also cuts at "\r".
    parts = log.split(b"\n")
    for index, part in enumerate(parts):
        line = part if index == len(parts) - 1 else part + b"\n"
        if not line:
            continue
        terminated = line.endswith(b"\n")
        if (terminated or ended or len(line) >= JUDGED) and line_filter.passes(
            line.removesuffix(b"\n")[:JUDGED]
        ):
            lines[offset] = line
        offset += len(line)
    return lines


def as_lines(log: bytes, pieces: list[Piece]) -> dict[int, bytes]:
    """The pieces, checked against the log at their offsets, regrouped into lines."""
    joined: dict[int, bytes] = {}
    last_end = -1
    for offset, data in pieces:
        assert data, "a filter never hands out an empty piece"
        assert len(data) <= MAX_PIECE
        assert offset >= last_end, "pieces come in log order and never overlap"
        assert log[offset : offset + len(data)] == data, f"piece at {offset} is not the log's"
        last_end = offset + len(data)
    # Regroup by the log's lines: a line's pieces are contiguous from its start.
    starts = [0] + [match.end() for match in re.finditer(b"\n", log)]
    by_line: dict[int, list[bytes]] = {}
    for offset, data in pieces:
        position = offset
        while position < offset + len(data):
            line_start = starts[bisect.bisect_right(starts, position) - 1]
            following = bisect.bisect_right(starts, position)
            line_end = starts[following] if following < len(starts) else len(log)
            piece_end = min(line_end, offset + len(data))
            by_line.setdefault(line_start, []).append(data[position - offset : piece_end - offset])
            position = piece_end
    for start, parts in by_line.items():
        joined[start] = b"".join(parts)
    return joined


def test_no_pattern_is_no_filter() -> None:
    assert LineFilter.compile([], []) is None


def test_grep_sends_whole_matching_lines_at_their_offsets() -> None:
    log = b"start\nerror: disk\nok\nERROR twice\nerror: net\nend\n"
    pieces = run(make(["error"]), log, [], ended=True)
    assert pieces == [(6, b"error: disk\n"), (33, b"error: net\n")]


def test_consecutive_matching_lines_come_as_one_piece() -> None:
    log = b"a1\na2\nb\na3\n"
    assert run(make(["a"]), log, [], ended=False) == [(0, b"a1\na2\n"), (8, b"a3\n")]


def test_exclude_drops_matching_lines_and_wins_over_grep() -> None:
    log = b"GET /health 200\nGET /api 500\nPOST /api 200\n"
    assert run(make(exclude=["/health"]), log, [], ended=False) == [
        (16, b"GET /api 500\nPOST /api 200\n")
    ]
    assert run(make(["api"], ["POST"]), log, [], ended=False) == [(16, b"GET /api 500\n")]


def test_any_grep_pattern_selects_a_line() -> None:
    log = b"warn x\ninfo y\nerror z\n"
    assert run(make(["^warn", "^error"]), log, [], ended=False) == [
        (0, b"warn x\n"),
        (14, b"error z\n"),
    ]


def test_a_pattern_sees_the_line_without_its_newline() -> None:
    log = b"done\nnot done yet\n"
    assert run(make(["^done$"]), log, [], ended=False) == [(0, b"done\n")]


def test_crlf_lines_pass_byte_for_byte_and_the_pattern_sees_the_carriage_return() -> None:
    log = b"alpha\r\nbeta\r\n"
    assert run(make(["beta"]), log, [], ended=False) == [(7, b"beta\r\n")]
    # The pattern sees "beta\r", as grep does: "$" is after the "\r".
    assert run(make(["beta$"]), log, [], ended=False) == []
    assert run(make(["beta\\r?$"]), log, [], ended=False) == [(7, b"beta\r\n")]


def test_an_unterminated_line_waits_for_its_newline() -> None:
    line_filter = make(["match"])
    assert line_filter.feed(0, b"skip\nmat") == []
    assert line_filter.feed(8, b"ch me") == []
    assert line_filter.feed(13, b"!\nno\n") == [(5, b"match me!\n")]


def test_flush_judges_the_last_unterminated_line_when_the_job_ends() -> None:
    line_filter = make(["tail"])
    assert line_filter.feed(0, b"x\nthe tail") == []
    assert line_filter.flush() == [(2, b"the tail")]
    dropping = make(["nothing"])
    dropping.feed(0, b"x\nthe tail")
    assert dropping.flush() == []


def test_binary_bytes_pass_untouched_and_literals_around_them_still_match() -> None:
    log = b"\x00\xff\xfe error \x80\n\xc3\xa9t\xc3\xa9\n\xff\xff\n"
    pieces = run(make(["error", "\u00e9t\u00e9"]), log, [], ended=False)
    assert pieces == [(0, b"\x00\xff\xfe error \x80\n\xc3\xa9t\xc3\xa9\n")]
    # An invalid byte matches no class nor ".", but \C matches any byte.
    assert run(make(["^.$"]), b"\xff\n", [], ended=False) == []
    assert run(make(["^\\C$"]), b"\xff\n", [], ended=False) == [(0, b"\xff\n")]


@pytest.mark.parametrize("seed", range(40))
def test_any_cut_of_the_log_gives_the_same_lines(seed: int) -> None:
    rng = random.Random(seed)
    words = [b"error", b"warn", b"ok", b"\r", b"\xff", b"x" * 300, b"a" * 70_000, b"\n", b"\n"]
    log = b"".join(rng.choice(words) for _ in range(rng.randrange(1, 60)))
    cuts = rng.sample(range(len(log)), min(len(log), rng.randrange(0, 20)))
    ended = rng.random() < 0.5
    for grep, exclude in [(["error"], []), ([], ["a{10}"]), (["x$", "^ok"], ["warn"])]:
        line_filter = make(grep, exclude)
        pieces = run(line_filter, log, cuts, ended=ended)
        assert as_lines(log, pieces) == expected(line_filter, log, ended=ended)


def test_a_line_longer_than_64_kib_is_decided_on_its_head_and_streamed() -> None:
    head = b"ERROR " + b"x" * (JUDGED - 6)
    line_filter = make(["ERROR"])
    # The first 64 KiB arrive in pieces: nothing is sent until the head is whole.
    assert line_filter.feed(0, b"ok\n" + head[:1000]) == []
    assert line_filter.feed(1003, head[1000:]) == [(3, head)]
    # The rest passes as it comes, never held.
    assert line_filter.feed(3 + JUDGED, b"y" * 500_000) == [
        (3 + JUDGED, b"y" * MAX_PIECE),
        (3 + JUDGED + MAX_PIECE, b"y" * (500_000 - MAX_PIECE)),
    ]
    end = 3 + JUDGED + 500_000
    assert line_filter.feed(end, b"z\nok\nERROR 2\n") == [(end, b"z\n"), (end + 5, b"ERROR 2\n")]


def test_a_long_line_that_does_not_match_is_dropped_as_it_comes() -> None:
    line_filter = make(["ERROR"])
    assert line_filter.feed(0, b"x" * JUDGED) == []
    # The match lies past the first 64 KiB: not seen, the line is dropped.
    assert line_filter.feed(JUDGED, b"ERROR\nERROR\n") == [(JUDGED + 6, b"ERROR\n")]
    assert line_filter.flush() == []


def test_the_filter_never_holds_more_than_64_kib_of_a_line() -> None:
    line_filter = make(["never"])
    for index in range(100):
        line_filter.feed(index * 10_000, b"q" * 10_000)
        assert len(line_filter._held) < JUDGED


def test_bytes_that_do_not_follow_start_afresh() -> None:
    line_filter = make(["b"])
    assert line_filter.feed(0, b"partial b") == []
    # A resume elsewhere: the held head belongs to no line now.
    assert line_filter.feed(100, b"b line\n") == [(100, b"b line\n")]
    assert line_filter.flush() == []


def test_pieces_are_at_most_256_kib_and_cut_between_lines() -> None:
    line = b"m" * 999 + b"\n"
    log = line * 600
    pieces = make(["m"]).feed(0, log)
    assert all(len(data) <= MAX_PIECE and data.endswith(b"\n") for _, data in pieces)
    assert b"".join(data for _, data in pieces) == log
    assert [offset for offset, _ in pieces] == [0, 262_000, 524_000]


@pytest.mark.parametrize(
    ("grep", "exclude", "named"),
    [
        (["(unclosed"], [], "(unclosed"),
        (["ok", "(?<=look)behind"], [], "(?<=look)behind"),
        ([], ["back\\1ref(x)"], "back\\1ref(x)"),
        (["a{2000}"], [], "a{2000}"),
        (["x" * 1025], [], "xxxx"),
    ],
)
def test_a_bad_pattern_is_an_invalid_request_naming_it(
    grep: list[str], exclude: list[str], named: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        LineFilter.compile(grep, exclude)
    assert repr(named) in str(raised.value) or named in str(raised.value)


def test_at_most_16_patterns_of_each_kind() -> None:
    assert LineFilter.compile([f"p{index}" for index in range(16)], ["q"] * 16) is not None
    with pytest.raises(InvalidRequest, match="at most 16 grep"):
        LineFilter.compile([f"p{index}" for index in range(17)], [])
    with pytest.raises(InvalidRequest, match="at most 16 exclude"):
        LineFilter.compile([], ["q"] * 17)


def test_a_pattern_of_exactly_1_kib_is_accepted() -> None:
    assert LineFilter.compile(["y" * 1024], []) is not None
    # Counted in UTF-8 bytes: 513 two-byte characters are over.
    with pytest.raises(InvalidRequest):
        LineFilter.compile(["\u00e9" * 513], [])


def test_flags_in_one_pattern_stay_in_it() -> None:
    line_filter = make(["(?i)error", "WARN"])
    log = b"Error\nwarn\nWARN\n"
    assert run(line_filter, log, [], ended=False) == [(0, b"Error\n"), (11, b"WARN\n")]


def test_a_pathological_pattern_runs_in_linear_time() -> None:
    # Backtracking engines take exponential time on this; RE2 takes a pass over the line.
    line_filter = make(["(a+)+$"], ["(x+x+)+y"])
    megabyte = b"a" * (1 << 20)
    started = time.monotonic()
    pieces = line_filter.feed(0, megabyte + b"b\n" + megabyte + b"\n")
    pieces += line_filter.feed(2 * (1 << 20) + 3, megabyte)
    pieces += line_filter.flush()
    elapsed = time.monotonic() - started
    # Generous: it takes about 10 ms; a backtracking engine would not finish at all.
    assert elapsed < 5
    # The first line is judged on its first 64 KiB (all "a": it matches); so is the second.
    assert sum(len(data) for _, data in pieces) == 3 * (1 << 20) + 3 - 0


def test_patterns_too_complex_to_judge_every_line_with_are_refused() -> None:
    # 16 patterns of 1 KiB of bounded repeats, each valid RE2: together about 480,000
    # instructions, past RE2's fast engine, seconds per 64 KiB line (a tester stalled the
    # daemon with them). Everyday patterns are far below the cap.
    heavy = "|".join(f"a.{{0,{80 + index % 20}}}(?:a|b)!" for index in range(60))[:1024]
    with pytest.raises(InvalidRequest, match=r"grep patterns are too complex to judge"):
        LineFilter.compile([heavy] * 16, [])
    # One alone compiles, and is still refused for its size.
    with pytest.raises(InvalidRequest, match=r"exclude patterns are too complex .*program size"):
        LineFilter.compile([], [heavy])
    everyday = [r"ERROR|WARN", r"\b\d{1,3}(\.\d{1,3}){3}\b", r"(?i)timeout|connection reset"]
    assert LineFilter.compile(everyday * 5, everyday) is not None
