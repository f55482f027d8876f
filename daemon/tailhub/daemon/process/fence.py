"""A fence around an upstream command: it dies when the lease it runs under may end.

`python -m tailhub.daemon.process.fence FD -- COMMAND...` runs COMMAND and reads, on FD, the
moments (CLOCK_MONOTONIC seconds, one per line) until which the daemon's lease is surely its
own. When that moment passes without a newer one, or FD is closed (the lease was lost, or the
daemon died), it kills COMMAND and its process group at once. It needs nothing of the daemon
while it waits, so a daemon that is frozen whole (SIGSTOP, a frozen VM), which its own
watchdog thread cannot help, still never leaves a second upstream running beside the one
another node starts. It imports only the standard library; a command starts about 0.1 s
later inside it (measured: 108 ms to run `true` through it, 1 ms without), and it holds
about 11 MiB while the command runs.

The daemon's side, `Fences`, keeps the write end of each job's pipe and writes the new
moment at every renewal.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

# Exit status when the fence stopped the command (as a shell reports SIGKILL).
FENCED = 128 + signal.SIGKILL


class Fences:
    """The daemon's ends of its fences, by job: one pipe per running upstream command."""

    def __init__(self) -> None:
        self._writers: dict[int, int] = {}
        self._until: dict[int, float] = {}

    def open(self, job_id: int) -> int:
        """A new pipe for the job's next command; returns the end to pass to it (the
        caller closes its copy once the command started)."""
        self.close(job_id)
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        os.set_inheritable(read_end, True)
        self._writers[job_id] = write_end
        self._write(job_id, self._until.get(job_id, 0.0))
        return read_end

    def extend(self, job_id: int, until: float) -> None:
        """The job's lease is surely this node's until `until` (time.monotonic())."""
        self._until[job_id] = until
        if job_id in self._writers:
            self._write(job_id, until)

    def close(self, job_id: int) -> None:
        """The lease is lost (or the fetch over): the job's command, if any, is killed."""
        write_end = self._writers.pop(job_id, None)
        if write_end is not None:
            os.close(write_end)

    def forget(self, job_id: int) -> None:
        self.close(job_id)
        self._until.pop(job_id, None)

    def close_all(self) -> None:
        for job_id in list(self._writers):
            self.close(job_id)

    def _write(self, job_id: int, until: float) -> None:
        try:
            os.write(self._writers[job_id], f"{until:.3f}\n".encode())
        except BlockingIOError:
            pass  # (a full pipe: the fence is not reading, and acts on what it has)
        except OSError:
            self.close(job_id)  # it is gone


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m tailhub.daemon.process.fence FD -- COMMAND...", file=sys.stderr)
        return 2
    fd = int(argv[0])
    if os.getpgid(0) != os.getpid():
        # A group of its own (the daemon starts it in a session of its own anyway): what it
        # kills is the command and what it started, never whoever started the fence.
        os.setpgid(0, 0)
    child = os.fork()
    if child == 0:  # the command, in the fence's process group
        os.close(fd)
        try:
            os.execvp(argv[2], argv[2:])  # noqa: S606 - the job's own command, as given
        except OSError as error:
            print(f"cannot run {argv[2]}: {error.strerror}", file=sys.stderr)
            os._exit(127)
    return _guard(fd, child)


def _guard(fd: int, child: int) -> int:
    until = 0.0
    pending = b""
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code  # (killed by signal N: 128 + N)
        now = time.monotonic()
        if until > 0 and now >= until:
            return _kill(child)
        timeout = 0.05 if until <= 0 else min(0.05, until - now)
        readable, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        if not readable:
            continue
        data = os.read(fd, 4096)
        if not data:  # the daemon closed it (the lease is lost) or died
            return _kill(child)
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                until = float(line)


def _kill(child: int) -> int:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(0), signal.SIGKILL)  # the command and all it started; and us
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)
    return FENCED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
