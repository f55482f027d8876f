"""Where an event stream starts: `Last-Event-ID` (the byte offset after the last event the
browser got, `O`, or `3:O3,4:O4` for several jobs), the same in the query (`offset=O`,
`offsets=3:O3,4:O4`: a page opening a new stream cannot set the header), or `tail_lines`.
Pure: no daemon here."""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_TAIL_LINES = 1000
MAX_TAIL_LINES = 100_000
MAX_MULTI_JOBS = 50
# 64-bit offsets and ids: 19 digits at most.
_MAX_DIGITS = 19
MAX_ID_CHARS = MAX_MULTI_JOBS * (2 * _MAX_DIGITS + 2)


def _number(text: str) -> int | None:
    if not text or len(text) > _MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value < 2**63 else None


def parse_offset(text: str | None, what: str = "Last-Event-ID") -> int | None:
    """The offset of a single job's Last-Event-ID (or `offset=`, named by `what`); ValueError
    when it is not one."""
    if text is None or not text.strip():
        return None
    value = _number(text.strip())
    if value is None:
        raise ValueError(f"{what} {text[:40]!r} is not a byte offset")
    return value


def parse_offsets(text: str | None, what: str = "Last-Event-ID") -> dict[int, int] | None:
    """The offsets of a multi-job Last-Event-ID (`3:120,4:0`, or `offsets=`, named by `what`);
    ValueError when it is not one."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if len(text) > MAX_ID_CHARS:
        raise ValueError(f"{what} is too long")
    offsets: dict[int, int] = {}
    for part in text.split(","):
        job_text, colon, offset_text = part.partition(":")
        job_id, offset = _number(job_text), _number(offset_text)
        if not colon or job_id is None or offset is None or job_id in offsets:
            raise ValueError(f"{what} {text[:40]!r} is not JOB:OFFSET,...")
        offsets[job_id] = offset
    return offsets


def format_offsets(offsets: Mapping[int, int]) -> str:
    """The multi-job id: every job's offset so far, in the order of the stream's jobs."""
    return ",".join(f"{job_id}:{offset}" for job_id, offset in offsets.items())


def parse_tail_lines(text: str | None) -> int:
    """`?tail_lines=` (default DEFAULT_TAIL_LINES); ValueError outside 0..MAX_TAIL_LINES."""
    if text is None or text == "":
        return DEFAULT_TAIL_LINES
    value = _number(text)
    if value is None or value > MAX_TAIL_LINES:
        raise ValueError(f"tail_lines must be a number from 0 to {MAX_TAIL_LINES}")
    return value


def parse_ids(text: str) -> list[int]:
    """`?ids=3,4,5`: distinct job ids, at most MAX_MULTI_JOBS; ValueError if not."""
    ids: list[int] = []
    for part in text.split(","):
        value = _number(part.strip())
        if value is None or value == 0:
            raise ValueError("ids must be job ids separated by commas (ids=3,4,5)")
        if value not in ids:
            ids.append(value)
        if len(ids) > MAX_MULTI_JOBS:
            raise ValueError(f"at most {MAX_MULTI_JOBS} jobs in one view")
    return ids
