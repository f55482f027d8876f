"""A log writer: fixed-size lines carrying their write time, at a fixed rate, for a fixed time.

    python -m bench.writer --rate BYTES_PER_S --duration S [--gate FIFO] [--marker TEXT] FILE...

FILE `-` is standard output. Each line is `LINE_BYTES` long and starts with the wall-clock
time it was written (`%017.6f`), so a reader finds a timestamp at every multiple of
LINE_BYTES. Lines go out in one write per file every `--interval` seconds, as a buffered
logger flushes. With `--gate`, writing starts once the FIFO is opened and closed by the
benchmark. With `--marker`, a last line holding the marker follows.
"""

from __future__ import annotations

import argparse
import os
import time

LINE_BYTES = 100
TIMESTAMP_BYTES = 17


def line(now: float, sequence: int) -> bytes:
    head = b"%017.6f %012d " % (now, sequence)
    return head + b"x" * (LINE_BYTES - len(head) - 1) + b"\n"


def timestamp_at(data: bytes, index: int, end: int | None = None) -> float | None:
    """The write time of the line starting at `index` in `data[:end]`, if it is all there."""
    if index + TIMESTAMP_BYTES > (len(data) if end is None else end):
        return None
    try:
        return float(data[index : index + TIMESTAMP_BYTES])
    except ValueError:  # the marker line
        return None


def write(fds: list[int], rate: float, duration: float, interval: float) -> int:
    """Writes to every fd at `rate` bytes/s for `duration` s; returns the lines per fd."""
    start = time.monotonic()
    written = 0
    tick = 0
    while True:
        elapsed = time.monotonic() - start
        due = min(
            int(rate * min(elapsed, duration) / LINE_BYTES), int(rate * duration) // LINE_BYTES
        )
        if due > written:
            now = time.time()
            block = b"".join(line(now, sequence) for sequence in range(written, due))
            for fd in fds:
                _write_all(fd, block)
            written = due
        if elapsed >= duration:
            return written
        tick += 1
        time.sleep(max(0.0, start + tick * interval - time.monotonic()))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--rate", type=float, required=True, help="bytes per second per file")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--gate")
    parser.add_argument("--marker")
    args = parser.parse_args()
    fds = [
        1 if name == "-" else os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for name in args.files
    ]
    if args.gate:
        with open(args.gate, "rb") as gate:  # blocks until the benchmark opens the gate
            gate.read()
    write(fds, args.rate, args.duration, args.interval)
    if args.marker:
        for fd in fds:
            _write_all(fd, args.marker.encode() + b"\n")


if __name__ == "__main__":
    main()
