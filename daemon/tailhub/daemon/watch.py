"""File-change notifications for the file tailers: one inotify instance for the whole daemon.

The kernel allows few inotify instances per user (128 by default), so every tailed file shares
one, and events are dispatched by watch descriptor. Where inotify is unavailable, waits fall
back to a short timeout, which the tailer treats like an event.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import struct
from pathlib import Path

from tailhub.daemon.wakeups import ChangeSignal

logger = logging.getLogger(__name__)

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVE_SELF = 0x800
_IN_DELETE_SELF = 0x400
_IN_IGNORED = 0x8000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_FILE_EVENTS = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVE_SELF | _IN_DELETE_SELF
_PATH_EVENTS = _IN_ATTRIB | _IN_MOVE_SELF | _IN_DELETE_SELF
_EVENT_HEADER = struct.Struct("iIII")
# Without inotify, a tailer looks at its file this often.
POLL_INTERVAL = 0.05


class FileWatch:
    """Change notifications for one file (one inode): `wait` returns after the next change."""

    def __init__(self, watcher: FileWatcher | None, descriptor: int) -> None:
        self._watcher = watcher
        self.descriptor = descriptor
        self._signal = ChangeSignal()
        # Set when a change arrives while nobody waits, so it is not missed.
        self._pending = False
        # The inode was renamed, unlinked or had its links changed: the path may name another
        # file now (rotation). Without inotify nobody knows, so assume it may have.
        self.inode_changed = watcher is None

    def clear(self) -> None:
        self._pending = False

    def path_checked(self) -> None:
        """The path was found to still name this inode."""
        self.inode_changed = self._watcher is None

    def fire(self, mask: int = 0) -> None:
        self._pending = True
        if mask & _PATH_EVENTS:
            self.inode_changed = True
        self._signal.notify()

    async def wait(self, timeout: float) -> None:
        """Returns after a change since the last `clear`, or after `timeout` seconds."""
        if self._watcher is None:
            timeout = min(timeout, POLL_INTERVAL)
        if not self._pending:
            await self._signal.wait_for(timeout)
        self._pending = False

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.unwatch(self)
            self._watcher = None


class FileWatcher:
    """Owns the daemon's inotify descriptor and routes its events to FileWatch objects."""

    def __init__(self) -> None:
        self._fd = -1
        self._libc: ctypes.CDLL | None = None
        self._watches: dict[int, set[FileWatch]] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError) as error:
            logger.warning("inotify unavailable (%s); file sources will poll", error)
            return
        if fd < 0:
            logger.warning(
                "inotify_init1 failed: %s; file sources will poll", os.strerror(ctypes.get_errno())
            )
            return
        self._libc, self._fd = libc, fd
        loop.add_reader(fd, self._read_events)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._fd >= 0:
            loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._watches.clear()

    def watch(self, path: Path) -> FileWatch:
        """Watches the inode that `path` names now (it stays with that inode if renamed)."""
        if self._libc is None or self._fd < 0:
            return FileWatch(None, -1)
        descriptor = self._libc.inotify_add_watch(self._fd, os.fsencode(path), _FILE_EVENTS)
        if descriptor < 0:
            logger.warning("cannot watch %s: %s; polling it", path, os.strerror(ctypes.get_errno()))
            return FileWatch(None, -1)
        watch = FileWatch(self, descriptor)
        self._watches.setdefault(descriptor, set()).add(watch)
        return watch

    def unwatch(self, watch: FileWatch) -> None:
        watches = self._watches.get(watch.descriptor)
        if watches is None:
            return
        watches.discard(watch)
        if not watches:
            del self._watches[watch.descriptor]
            if self._libc is not None and self._fd >= 0:
                # Fails harmlessly when the inode is already gone (IN_IGNORED came first).
                self._libc.inotify_rm_watch(self._fd, watch.descriptor)

    def _read_events(self) -> None:
        try:
            buffer = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        position = 0
        while position + _EVENT_HEADER.size <= len(buffer):
            descriptor, mask, _cookie, name_length = _EVENT_HEADER.unpack_from(buffer, position)
            position += _EVENT_HEADER.size + name_length
            for watch in tuple(self._watches.get(descriptor, ())):
                watch.fire(mask)
            if mask & _IN_IGNORED:
                self._watches.pop(descriptor, None)
