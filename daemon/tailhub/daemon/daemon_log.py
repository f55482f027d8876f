"""The daemon's own log: `<home>/tailhubd.log`, bounded in size, and repeats collapsed.

Whatever a client makes the daemon log (a follower killed mid-read, a bad token, an odd
request) must not fill the disk: the file rotates at LOG_MAX_BYTES, keeping LOG_BACKUPS older
copies (tailhubd.log.1 ...), and a line repeated within REPEAT_WINDOW_S is written at most
REPEATS_SHOWN times, then counted: the count comes as "(repeated N more times)" on the next
one after the window, or when the daemon stops. One test logged 854 identical "client went
away mid-write" lines; now it is three and a count.

The file is opened as every state file is (never through a symlink, ours, one link). The
daemon also writes to stderr for systemd and a foreground run, unless stderr *is* that file
(autostart points it there for the lines written before logging starts): then stderr follows
the file through each rotation, so that nothing written to it grows a rotated-away copy.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tailhub.daemon.grpc_log import quiet_client_gone_tracebacks
from tailhub.daemon.statedir import open_state_file

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3
REPEAT_WINDOW_S = 60.0
REPEATS_SHOWN = 3
# Distinct lines remembered at once (the least recently seen go first, their counts told).
MAX_REMEMBERED = 1024
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class _Seen:
    started: float
    shown: int = 1
    hidden: int = 0


class RepeatFilter(logging.Filter):
    """Lets a line through REPEATS_SHOWN times per window, then counts its repeats."""

    def __init__(
        self,
        window: float = REPEAT_WINDOW_S,
        shown: int = REPEATS_SHOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._window = window
        self._shown = shown
        self._clock = clock
        self._seen: collections.OrderedDict[tuple[str, int, str], _Seen] = collections.OrderedDict()
        # Where the counts of lines that stopped repeating are written at the end.
        self.handlers: list[logging.Handler] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_count", False):
            return True
        # Each handler asks: the record is judged once, by the first.
        decided = getattr(record, "repeat_shown", None)
        if decided is None:
            decided = record.repeat_shown = self._judge(record)
        return bool(decided)

    def _judge(self, record: logging.LogRecord) -> bool:
        # The whole line, traceback aside: lines that differ only in an id are not repeats.
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None or now - seen.started >= self._window:
            hidden = seen.hidden if seen is not None else 0
            self._seen[key] = _Seen(now)
            self._seen.move_to_end(key)
            self._forget_oldest()
            if hidden:
                _add_count(record, hidden)
            return True
        if seen.shown < self._shown:
            seen.shown += 1
            return True
        seen.hidden += 1
        return False

    def flush_counts(self) -> None:
        """Writes the counts not yet told."""
        seen, self._seen = self._seen, collections.OrderedDict()
        for key, each in seen.items():
            self._tell(key, each)

    def _forget_oldest(self) -> None:
        while len(self._seen) > MAX_REMEMBERED:
            key, oldest = self._seen.popitem(last=False)
            self._tell(key, oldest)

    def _tell(self, key: tuple[str, int, str], seen: _Seen) -> None:
        if not seen.hidden:
            return
        name, level, message = key
        record = logging.LogRecord(name, level, "", 0, message, (), None)
        _add_count(record, seen.hidden)
        for handler in self.handlers:
            handler.handle(record)


def _add_count(record: logging.LogRecord, hidden: int) -> None:
    record.msg = f"{record.getMessage()} (repeated {hidden} more times)"
    record.args = ()
    record.repeat_count = hidden


class _StateFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler that opens its file as a state file, and can take stderr and
    stdout along to each new file."""

    def __init__(self, path: Path, max_bytes: int, backups: int, carry_std: bool) -> None:
        self.carry_std = carry_std
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")

    def _open(self) -> io.TextIOWrapper:
        fd = open_state_file(Path(self.baseFilename), os.O_WRONLY | os.O_APPEND)
        stream = io.TextIOWrapper(
            io.FileIO(fd, "a"), encoding="utf-8", errors="backslashreplace", line_buffering=True
        )
        if getattr(self, "carry_std", False):
            for std in (1, 2):
                os.dup2(stream.fileno(), std)
        return stream


def _same_file(fd: int, path: Path) -> bool:
    try:
        ours, theirs = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)


# Control characters but the newline and tab, DEL, C1, and bidirectional overrides: a job's
# stderr events and other text from outside reach the log, which people read with `tail`.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class EscapingFormatter(logging.Formatter):
    """Lines with every control character written as an escape (`\x1b`, `\u202e`): a job's
    output in an event, a name or a reason must not set a reader's terminal title, clear its
    screen or write its clipboard."""

    def format(self, record: logging.LogRecord) -> str:
        return _CONTROLS.sub(_escape, super().format(record))


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def configure(level: str) -> RepeatFilter:
    """Logging to stderr, repeats collapsed, grpc's records of gone clients made one line;
    the filter, for `log_file_owned`."""
    quiet_client_gone_tracebacks()
    repeats = RepeatFilter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    handler.addFilter(repeats)
    repeats.handlers.append(handler)
    root = logging.getLogger()
    root.setLevel(level.upper())
    root.addHandler(handler)
    return repeats


@contextlib.contextmanager
def log_file_owned(home: Path, path: Path, repeats: RepeatFilter) -> Iterator[None]:
    """The log also goes to `path` during the block; the counts not yet told at its end."""
    own_log_file(home, path, repeats)
    try:
        yield
    finally:
        repeats.flush_counts()


def own_log_file(
    home: Path,
    path: Path,
    repeats: RepeatFilter,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
) -> None:
    """From now on the daemon's log also goes to `path` in `home` (its state directory, checked
    by the caller, created here as Daemon.start would), rotated."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    carry_std = _same_file(2, path)
    handler = _StateFileHandler(path, max_bytes, backups, carry_std)
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    handler.addFilter(repeats)
    root = logging.getLogger()
    if carry_std:
        # stderr is this file already: one copy of each line is enough.
        for other in repeats.handlers:
            root.removeHandler(other)
        repeats.handlers.clear()
    repeats.handlers.append(handler)
    root.addHandler(handler)
