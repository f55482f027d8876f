"""A remote log reached through a command, as `ssh host tail -n +1 -f UPSTREAM` reaches it.

Run as a command source (the tests attach it with `tailhub jobs attach --command`):

    python replay_upstream.py UPSTREAM STATE [CUT ...]

Each run is one upstream connection; it counts itself in STATE/connections. It sends UPSTREAM
from its first byte, in writes that line up with nothing, and follows it as it grows. Connection
number K, for K up to the number of CUTs, stops after CUT[K-1] bytes, waits for STATE/drop-K and
exits 255, as ssh does when the network breaks mid-stream. The other connections go on until
STATE/done exists and the whole file is sent, then exit 0. None outlives LIFETIME seconds, nor
STATE (removed with the test's directory), so a test that fails leaves nothing running.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

WRITE_BYTES = 4093
LIFETIME = 120.0


def main() -> int:
    upstream, state, *cuts = sys.argv[1:]
    number = _count_connection(Path(state))
    _note_overlap(Path(state), number)
    limit = int(cuts[number - 1]) if number <= len(cuts) else None
    sent = 0
    deadline = time.monotonic() + LIFETIME
    with open(upstream, "rb") as source:
        while time.monotonic() < deadline:
            want = WRITE_BYTES if limit is None else min(WRITE_BYTES, limit - sent)
            data = source.read(want) if want else b""
            if data:
                os.write(1, data)
                sent += len(data)
                continue
            if not os.path.isdir(state):  # the test is over: nobody will open its gates
                return 1
            if limit is not None and sent == limit:
                if (Path(state) / f"drop-{number}").exists():
                    return 255
            # peek, not read: a byte the test appended since the read above (just before it
            # touched `done`) must still be sent, not consumed here and lost from the log.
            elif (Path(state) / "done").exists() and not source.peek(1):
                return 0
            time.sleep(0.005)
    return 1


def _count_connection(state: Path) -> int:
    """Counts this connection in STATE/connections (replaced whole: a connection killed while
    counting never leaves it half written for the next one)."""
    counter = state / "connections"
    try:
        number = int(counter.read_text()) + 1
    except (FileNotFoundError, ValueError):
        number = 1
    scratch = state / f"connections.{os.getpid()}"
    scratch.write_text(str(number))
    os.replace(scratch, counter)
    return number


def _note_overlap(state: Path, number: int) -> None:
    """Holds STATE/lock while it runs; notes in STATE/overlaps when another connection of the
    same upstream still held it (two fetches at once: what cluster mode must never do)."""
    lock = os.open(state / "lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with open(state / "overlaps", "a") as overlaps:
            overlaps.write(f"{number}\n")
    # Deliberately left open: the lock lasts as long as this process.


if __name__ == "__main__":
    sys.exit(main())
