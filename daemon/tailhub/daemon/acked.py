"""Where a push job's acknowledged bytes end: `logs/N.acked`, written before each Publish
is answered, read at start to cut off what a crash left of an unanswered one.

A Publish appends with one write(2) to the log; a daemon killed during that write (kill -9,
the OOM killer) can leave part of the chunk in the file, ending on a page boundary. Its
publisher was never answered, so those bytes must not be served (invariant 6), and its
retry of the chunk at the same offset must be taken, not refused because the log already
holds a piece of it. The log's size alone cannot tell a whole chunk from a piece; this
record can: it holds the size the daemon last answered with, and it is written after the
append and before the answer, so at start a log longer than it ends with bytes nobody was
told were stored.

The record is eight bytes (a little-endian u64) overwritten in place: one write within a
page, which a kill cannot tear, and which needs no new block on a full disk once the file
exists (it is created, holding 0, when the job is attached). Written to the page cache and
not fsync'd, like the log: it survives the daemon's crash, which is what it is for.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

from tailhub.daemon.errors import StorageFull
from tailhub.daemon.faults import is_disk_full
from tailhub.daemon.paths import shown
from tailhub.daemon.statedir import open_state_file

_END = struct.Struct("<Q")

logger = logging.getLogger(__name__)


class AckedEnd:
    """The record of one push job (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, size: int) -> None:
        """Notes that the log's first `size` bytes are acknowledged (before answering so).
        StorageFull if it cannot be written: then the answer must not be sent either."""
        try:
            # Opened per call, not held: an idle push job keeps no descriptor.
            fd = open_state_file(self.path, os.O_WRONLY)
            try:
                os.pwrite(fd, _END.pack(size), 0)
            finally:
                os.close(fd)
        except OSError as error:
            if is_disk_full(error):
                raise StorageFull(
                    f"disk full: cannot record the acknowledged end of {self.path.name}"
                ) from error
            raise

    def read(self) -> int | None:
        """The acknowledged end recorded; None when there is no usable record (a job
        attached by a daemon before this record existed, or a file not of ours)."""
        try:
            fd = open_state_file(self.path, os.O_RDONLY, create=False)
        except FileNotFoundError:
            return None
        except OSError as error:
            logger.warning(
                "%s: not read (%s); the log is not checked against it", shown(self.path), error
            )
            return None
        try:
            data = os.pread(fd, _END.size + 1, 0)
        finally:
            os.close(fd)
        if len(data) != _END.size:
            logger.warning(
                "%s: holds %d bytes, not %d; ignored", shown(self.path), len(data), _END.size
            )
            return None
        (size,) = _END.unpack(data)
        return int(size)
