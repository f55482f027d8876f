"""`tailhub jobs logs -o json`: one JSON object per line of a log, for scripts.

    {"job": 7, "name": "train", "offset": 1234, "time": 1796623649.103, "line": "epoch 3"}

`offset` is the line's byte offset in the log (resume or `--grep` keep it: it is the log's
own), `time` when its first byte reached the daemon (Unix seconds; null when the daemon kept no
time for it), `line` its text without the "\\n". A line that is not valid UTF-8 also carries
`line_b64`, its exact bytes in base64, and `line` then shows them with U+FFFD for each invalid
byte: a script reads `line` alone for text logs and can still get a binary line back exactly.
A line over MAX_LINE_BYTES comes as several objects, each with its own offset.
"""

from __future__ import annotations

import base64
import json
from typing import IO

from tailhub.client._timestamps import TimeMarks

# An unfinished line longer than this is written out (bounded memory per job).
MAX_LINE_BYTES = 1024 * 1024


def line_object(job_id: int, name: str, offset: int, when: float | None, raw: bytes) -> bytes:
    """One line's JSON object, and its newline."""
    record: dict[str, object] = {"job": job_id, "name": name, "offset": offset, "time": when}
    try:
        record["line"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        record["line"] = raw.decode("utf-8", "replace")
        record["line_b64"] = base64.b64encode(raw).decode("ascii")
    # ensure_ascii off: readable text; JSON still escapes every control character.
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"


class JsonLines:
    """One job's log as JSON objects, one per whole line (LineStamper's interface)."""

    def __init__(self, out: IO[bytes], job_id: int, name: str) -> None:
        self._out = out
        self._job_id = job_id
        self._name = name
        self._marks = TimeMarks()
        # The line begun but not ended: its bytes, where it starts, when it came.
        self._line = bytearray()
        self._line_offset = 0
        self._line_time: float | None = None

    def mark(self, offset: int, when: float) -> None:
        self._marks.add(offset, when)

    def write(self, offset: int, data: bytes) -> None:
        """Writes the lines `data` (the log's bytes at `offset`) completes."""
        if self._line and self._line_offset + len(self._line) != offset:
            # Not the rest of the begun line (a filtered stream skipped): it ended there.
            self._emit()
        parts: list[bytes] = []
        position = 0
        while position < len(data):
            if not self._line:
                self._line_offset = offset + position
                self._line_time = self._marks.time_at(self._line_offset)
            newline = data.find(b"\n", position)
            if newline < 0:
                self._line += data[position:]
                if len(self._line) >= MAX_LINE_BYTES:
                    parts.append(self._object())
                break
            self._line += data[position:newline]
            parts.append(self._object())
            position = newline + 1
        if parts:
            self._out.write(b"".join(parts))
            self._out.flush()

    def _object(self) -> bytes:
        raw = bytes(self._line)
        self._line.clear()
        return line_object(self._job_id, self._name, self._line_offset, self._line_time, raw)

    def _emit(self) -> None:
        if self._line:
            self._out.write(self._object())
            self._out.flush()

    def finish(self) -> None:
        """The stream ended: a last line without a newline is an object too."""
        self._emit()
