"""Gives memory the C heap holds free back to the system, once enough of it has piled up.

glibc keeps what a thread frees in that thread's arena for the next allocation there, and
hands pages back only from the top of an arena. gRPC's threads allocate and free small
blocks at a high rate under a flood (HTTP/2 rapid reset: about 200,000 streams a second on
4 connections), scattering what stays in use over many pages: heaptrack saw a live heap of
26 MiB while the daemon's RSS was 97 MiB, and without a trim the RSS stayed up after the
flood. `malloc_trim(0)` returns the free pages in the middle of every arena too.

Measured with a rapid-reset flood of 10 s (bench/rapid_reset_client.py, 3 runs each): peak
RSS 131-148 MiB without it and 103-106 MiB with a trim every 0.5 s at 4 connections;
249-255 against 201-202 MiB at 32 connections, and 100-148 against 68-72 MiB after. A trim
every 2 s gave 138 MiB at 4 connections; trimming only when more than half the heap was free,
137-151.

A trim costs page faults when the freed pages are wanted again, so it runs only when the
arenas hold more than TRIM_ABOVE_BYTES free (`mallinfo2`, which sums the free lists, not
the heap). Where the C library has neither call (musl, macOS), nothing runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging

from tailhub.daemon.faults import HEAP_TRIM
from tailhub.daemon.supervisor import Supervisor

logger = logging.getLogger(__name__)

CHECK_EVERY_S = 0.5
TRIM_ABOVE_BYTES = 16 << 20


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (2.33 and later): every field a size_t."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",  # free bytes in the arenas: what a trim may give back
            "keepcost",
        )
    ]


class HeapTrim:
    """Checks the free bytes of the C heap every CHECK_EVERY_S and trims when they pass
    TRIM_ABOVE_BYTES (an essential task: supervisor.py). `supported` is False, and `start`
    does nothing, without glibc's calls."""

    def __init__(self) -> None:
        self._mallinfo2 = None
        self._malloc_trim = None
        try:
            # The process's own symbols, libc's among them (find_library would run ldconfig,
            # 40 ms at every start). CDLL, not PyDLL: the calls run without the GIL.
            libc = ctypes.CDLL(None)
            self._mallinfo2 = libc.mallinfo2
            self._malloc_trim = libc.malloc_trim
        except (OSError, AttributeError):
            return
        self._mallinfo2.restype = _MallInfo2
        self._mallinfo2.argtypes = []
        self._malloc_trim.restype = ctypes.c_int
        self._malloc_trim.argtypes = [ctypes.c_size_t]

    @property
    def supported(self) -> bool:
        return self._malloc_trim is not None

    def free_bytes(self) -> int:
        assert self._mallinfo2 is not None
        return int(self._mallinfo2().fordblks)

    def trim(self) -> bool:
        """Trims now; whether any memory went back to the system."""
        assert self._malloc_trim is not None
        return bool(self._malloc_trim(0))

    def start(self, essentials: Supervisor) -> None:
        if self.supported:
            essentials.spawn(self._run(), name=HEAP_TRIM)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            # In a thread: a trim of a few hundred MiB walks every free block, and gRPC's
            # threads, not the event loop, are the ones that wait on the arena's lock.
            free = await asyncio.to_thread(self.free_bytes)
            if free > TRIM_ABOVE_BYTES:
                released = await asyncio.to_thread(self.trim)
                logger.debug("heap trim: %d bytes free in the arenas, released %s", free, released)
