"""A subscription's line filter: `SubscribeRequest.grep`/`exclude`, applied after the one fetch.

A line is its bytes through "\\n" (a job's unterminated last line, once the job has ended,
also counts). The patterns see it without the "\\n", judged by its first 64 KiB, and a line
passes when it matches no `exclude` pattern and, with any `grep` pattern, at least one of them.
What passes keeps the log's own offsets, so a filtered follower resumes exactly where it left.

Matching is RE2 (`google-re2`): time linear in the line, whatever the pattern, so a read
token's `(a+)+$` cannot stall the daemon. It runs on the log's bytes, never decoded: a log is
not always UTF-8 and decoding with `surrogateescape` would not help, since the `re2` module
encodes a `str` subject to UTF-8 and a lone surrogate cannot be. The patterns are UTF-8 (a
proto string), compiled in RE2's UTF-8 mode: a literal matches its UTF-8 bytes, and a byte
that is not valid UTF-8 is matched by no character class nor `.` (`\\C` matches any byte);
the text around it still matches. Patterns of one kind are joined into one alternation, so
a line costs one search per kind, not one per pattern.

The filter holds at most one line's first 64 KiB: a longer line is decided on those and the
rest of it passed or dropped as it comes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import re2

from tailhub.daemon.errors import InvalidRequest

# A pattern sees a line's first JUDGED bytes; the filter holds no more of an unended line.
JUDGED = 64 * 1024
MAX_PATTERN_BYTES = 1024
MAX_PATTERNS = 16
# The compiled size (RE2's program size, about its instructions) of one kind's patterns
# together: what a byte costs to judge grows with it, and past RE2's DFA memory a search falls
# back to a far slower engine. Everyday patterns take 5-50 (`ERROR|WARN` 13, an IPv4 address
# 29); 16 patterns of 1 KiB of bounded repeats (`a.{0,82}(?:a|b)!|...`) took 480,000 and
# seconds per 64 KiB line, stalling the daemon. At this size a 64 KiB line takes about 1 ms.
MAX_PROGRAM_SIZE = 5000
# A piece the filter hands out is at most this long (a chunk's cap in the proto).
MAX_PIECE = 256 * 1024

Piece = tuple[int, bytes]


def _options() -> Any:
    options = re2.Options()
    # RE2 logs a pattern it cannot compile to stderr itself; the caller gets the error.
    options.log_errors = False
    # Whether a line matches is all we ask: without submatches RE2 runs its DFA alone, many
    # times faster on a long line (`(a+)+$` on 64 KiB: 0.7 ms, not 11).
    options.never_capture = True
    return options


def _error_text(error: Exception) -> str:
    detail = error.args[0] if error.args else ""
    if isinstance(detail, bytes):
        return detail.decode("utf-8", "replace")
    return str(detail)


def _compile_kind(kind: str, patterns: Sequence[str]) -> Any:
    """One RE2 matching any of `patterns` (None for none), each checked alone first so that
    an error names the pattern at fault."""
    if len(patterns) > MAX_PATTERNS:
        raise InvalidRequest(f"at most {MAX_PATTERNS} {kind} patterns, not {len(patterns)}")
    if not patterns:
        return None
    encoded = []
    for pattern in patterns:
        raw = pattern.encode("utf-8", "surrogatepass")
        if len(raw) > MAX_PATTERN_BYTES:
            raise InvalidRequest(
                f"{kind} pattern {pattern[:64]!r}... is {len(raw)} bytes, over {MAX_PATTERN_BYTES}"
            )
        try:
            re2.compile(raw, _options())
        except re2.error as error:
            raise InvalidRequest(
                f"{kind} pattern {pattern!r} is not a valid RE2: {_error_text(error)}"
            ) from None
        encoded.append(raw)
    # Each compiles alone, so a group around each cannot change another's meaning; flags
    # such as (?i) stay inside their group.
    joined = b"|".join(b"(?:" + raw + b")" for raw in encoded)
    try:
        compiled = re2.compile(joined, _options())
    except re2.error as error:
        raise _too_complex(kind, _error_text(error)) from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        size = f"RE2 program size {compiled.programsize}, at most {MAX_PROGRAM_SIZE}"
        raise _too_complex(kind, size)
    return compiled


def _too_complex(kind: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"the {kind} patterns are too complex to judge every line with ({why}): use fewer or "
        "simpler patterns, with smaller bounded repeats"
    )


class _Pieces:
    """Output pieces: adjacent passes joined while they fit in MAX_PIECE, so that pieces
    are cut between lines (a line over MAX_PIECE is cut in its middle)."""

    def __init__(self) -> None:
        self._pieces: list[tuple[int, list[bytes], int]] = []

    def add(self, offset: int, data: bytes) -> None:
        if self._pieces:
            start, parts, size = self._pieces[-1]
            if start + size == offset and size + len(data) <= MAX_PIECE:
                parts.append(data)
                self._pieces[-1] = (start, parts, size + len(data))
                return
        for cut in range(0, len(data), MAX_PIECE):
            part = data[cut : cut + MAX_PIECE]
            self._pieces.append((offset + cut, [part], len(part)))

    def done(self) -> list[Piece]:
        return [(start, b"".join(parts)) for start, parts, _ in self._pieces]


def joined(pieces: list[Piece]) -> list[Piece]:
    """`pieces` (in log order), adjacent ones joined while they fit in MAX_PIECE."""
    out = _Pieces()
    for offset, data in pieces:
        out.add(offset, data)
    return out.done()


class LineFilter:
    """Passes the whole lines of a log that a subscription's patterns select.

    Fed the log in order (`feed`), it answers what passes as (log offset, bytes) pieces; an
    unterminated line waits for its "\\n" (or `flush`, when the job has ended).
    """

    def __init__(self, grep: Any, exclude: Any) -> None:
        self._grep = grep
        self._exclude = exclude
        self._next: int | None = None  # where the next feed should start
        self._line_offset = 0  # where the held line starts
        self._held = bytearray()  # the held line's first bytes, fewer than JUDGED
        self._verdict: bool | None = None  # a long line's, decided on its first JUDGED bytes

    @classmethod
    def compile(cls, grep: Sequence[str], exclude: Sequence[str]) -> LineFilter | None:
        """The filter for these patterns, None when there are none.

        Raises InvalidRequest naming a pattern RE2 cannot compile or one over 1 KiB, or when
        there are more than 16 of a kind.
        """
        grep_re = _compile_kind("grep", grep)
        exclude_re = _compile_kind("exclude", exclude)
        if grep_re is None and exclude_re is None:
            return None
        return cls(grep_re, exclude_re)

    @property
    def pending_from(self) -> int | None:
        """Where the next piece can start at the earliest: the held line's start, or where
        the next feed starts (None before the first)."""
        return self._line_offset if self._held else self._next

    def passes(self, line: bytes | bytearray | memoryview) -> bool:
        """Whether a line (without its "\\n") is sent, judged by its first JUDGED bytes."""
        text = memoryview(line)[:JUDGED]
        if self._exclude is not None and self._exclude.search(text) is not None:
            return False
        return self._grep is None or self._grep.search(text) is not None

    def feed(self, offset: int, data: bytes) -> list[Piece]:
        """What passes of the log's bytes `data` at `offset`: runs of whole lines, each with
        its log offset (a line longer than JUDGED may come in several pieces).

        Bytes that do not follow the previous feed start afresh: what was held is dropped
        and `offset` is taken for a line's start."""
        if self._next != offset:
            self._forget()
        self._next = offset + len(data)
        data = bytes(data)
        out = _Pieces()
        pos = 0
        if self._held or self._verdict is not None:
            pos = self._go_on(offset, data, out)
        view = memoryview(data)
        run_start = run_end = pos
        size = len(data)
        while pos < size:
            newline = data.find(b"\n", pos)
            if newline < 0:
                break
            if self.passes(view[pos:newline]):
                # A run is cut where a line was dropped, and before it would outgrow a piece.
                if run_end != pos or newline + 1 - run_start > MAX_PIECE:
                    out.add(offset + run_start, data[run_start:run_end])
                    run_start = pos
                run_end = newline + 1
            pos = newline + 1
        out.add(offset + run_start, data[run_start:run_end])
        if pos < size:
            self._hold(offset + pos, view[pos:], out)
        return out.done()

    def flush(self) -> list[Piece]:
        """The job has ended: its unterminated last line, if held and passing."""
        out = _Pieces()
        if self._verdict is None and self._held and self.passes(self._held):
            out.add(self._line_offset, bytes(self._held))
        self._forget()
        self._next = None
        return out.done()

    def _forget(self) -> None:
        self._held = bytearray()
        self._verdict = None

    def _go_on(self, offset: int, data: bytes, out: _Pieces) -> int:
        """Carries on the line begun in an earlier feed; answers where the next line starts."""
        newline = data.find(b"\n")
        end = len(data) if newline < 0 else newline + 1
        if self._verdict is not None:
            # A long line already decided: its rest passes or not, as it comes.
            if self._verdict:
                out.add(offset, data[:end])
            if newline >= 0:
                self._verdict = None
            return end
        if newline < 0:
            head = bytes(self._held) + data
            self._held = bytearray()
            self._hold(self._line_offset, memoryview(head), out)
            return end
        line = bytes(self._held) + data[:newline]
        self._held = bytearray()
        if self.passes(line):
            out.add(self._line_offset, line + b"\n")
        return end

    def _hold(self, line_offset: int, tail: memoryview, out: _Pieces) -> None:
        """Keeps an unterminated line, or decides it when it has JUDGED bytes already."""
        if len(tail) < JUDGED:
            self._line_offset = line_offset
            self._held = bytearray(tail)
            return
        self._verdict = self.passes(tail[:JUDGED])
        if self._verdict:
            out.add(line_offset, bytes(tail))
