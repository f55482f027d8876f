"""Following a growing file the way `tail -F` does: across truncation and rotation."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from tailhub.daemon.errors import UpstreamUnusable
from tailhub.daemon.sources.base import Upstream
from tailhub.daemon.wakeups import StopFlag
from tailhub.daemon.watch import FileWatch, FileWatcher

READ_BYTES = 1024 * 1024
# Even with inotify, look at the path this often: a new file at the path (rotation) is
# noticed by its inode, which the watch on the old inode cannot see.
RECHECK_SECONDS = 1.0
# While the path is missing (between rename and re-create), look this often.
MISSING_RECHECK_SECONDS = 0.1


def _open_regular(path: Path) -> int:
    """Opens a regular file for reading; anything else is refused (UpstreamUnusable).

    Non-blocking, on the event loop's thread: opening a FIFO blocks until a writer comes,
    and a blocked worker thread stalls every file job and keeps a stopping daemon alive.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UpstreamUnusable(f"{path} is not a regular file; only regular files are followed")
        # Reads of a regular file never block; clear the flag anyway, it is not ours to keep.
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class FileTailer:
    """Moves the bytes of one path into the upstream, whatever the file's renames.

    Resume state: `inode` of the file being read and `base`, the log offset of that file's
    first byte; the read position is therefore `stored - base`, valid across daemon restarts.
    """

    def __init__(
        self, path: Path, watcher: FileWatcher, upstream: Upstream, stop: StopFlag
    ) -> None:
        self._path = path
        self._watcher = watcher
        self._upstream = upstream
        self._stop = stop

    async def follow(self) -> None:
        """Returns once `stop` is set and the file is drained."""
        while True:
            handle = await self._open_when_present()
            if handle is None:
                return
            stat = os.fstat(handle.fileno())
            self._adopt(stat)
            watch = self._watcher.watch(self._path)
            unregister = self._stop.on_set(watch.fire)
            try:
                if not await self._read_until_replaced(handle, watch):
                    return
            finally:
                unregister()
                watch.close()
                await handle.close()

    def _adopt(self, stat: os.stat_result) -> None:
        state = self._upstream.state
        position = self._upstream.stored - int(state.get("base", 0))
        known = state.get("inode")
        if known is not None and known != stat.st_ino:
            self._upstream.event(
                f"{self._path} was replaced; following the new file from its start"
            )
            self._restart_at_zero(stat.st_ino)
        elif stat.st_size < position:
            self._upstream.event(f"{self._path} was truncated; following it from its start")
            self._restart_at_zero(stat.st_ino)
        elif known is None:
            state["inode"] = stat.st_ino
            self._upstream.save_state()

    def _restart_at_zero(self, inode: int) -> None:
        state: dict[str, Any] = self._upstream.state
        state["inode"] = inode
        state["base"] = self._upstream.stored
        self._upstream.save_state()

    async def _open_when_present(self) -> Any:
        announced = False
        while True:
            try:
                return await aiofiles.open(_open_regular(self._path), "rb", buffering=0)
            except FileNotFoundError:
                if self._stop.is_set():
                    return None
                if not announced:
                    self._upstream.event(f"{self._path} does not exist; waiting for it to appear")
                    announced = True
                await self._sleep_unless_finishing(MISSING_RECHECK_SECONDS)

    async def _sleep_unless_finishing(self, seconds: float) -> None:
        done = asyncio.Event()
        unregister = self._stop.on_set(done.set)
        try:
            await asyncio.wait_for(done.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            unregister()

    async def _read_until_replaced(self, handle: Any, watch: FileWatch) -> bool:
        """Reads until the path names another file (True) or the job is finished (False)."""
        upstream = self._upstream
        state = upstream.state
        await handle.seek(upstream.stored - int(state.get("base", 0)))
        inode = int(state["inode"])
        path_checked = time.monotonic()
        while True:
            watch.clear()
            # fstat is a cheap call on this thread; each aiofiles call is a trip to a worker
            # thread, so read only when there is something to read.
            size = os.fstat(handle.fileno()).st_size
            position = upstream.stored - int(state.get("base", 0))
            if size > position:
                data = await handle.read(READ_BYTES)
                if data:
                    upstream.append(data)
                    continue
            if size < position:
                upstream.event(f"{self._path} was truncated; following it from its start")
                self._restart_at_zero(inode)
                await handle.seek(0)
                continue
            if self._stop.is_set():
                return False
            if not watch.inode_changed and time.monotonic() - path_checked < RECHECK_SECONDS:
                await watch.wait(RECHECK_SECONDS)
                continue
            path_checked = time.monotonic()
            try:
                current = await aiofiles.os.stat(self._path)
            except FileNotFoundError:
                current = None
            if current is None or current.st_ino != inode:
                # Rotated: take what the writer put in the old file before it let go.
                data = await handle.read(READ_BYTES)
                while data:
                    upstream.append(data)
                    data = await handle.read(READ_BYTES)
                if current is not None:
                    return True
                await watch.wait(MISSING_RECHECK_SECONDS)
                continue
            watch.path_checked()
            await watch.wait(RECHECK_SECONDS)
