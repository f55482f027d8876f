"""The node's fence: one small process that kills each upstream command when its lease may end.

`python -I -m tailhub.daemon.process.fence FD` runs beside a cluster node's daemon, in a session
of its own, for as long as the daemon runs. FD is a SOCK_SEQPACKET socket to the daemon, which
sends one message per packet (ASCII):

- `T JOB UNTIL [JOB UNTIL ...]`: job JOB's lease is surely this node's until UNTIL
  (CLOCK_MONOTONIC seconds, the same clock in every process); sent at every renewal.
- `A JOB` with two descriptors: the job's next command is about to start. Its gate (a shell,
  process/fences.py) writes its pid on the first, a pipe, and waits on the second for `go`.
  The fence takes a pidfd of it, checks it is the daemon's child leading a process group of
  its own, and says `go` only while the job's lease is safe: the command is fenced before it
  runs a single instruction of its own. A gate that reports too late, or anything else, is
  refused (the pipe closes, the gate exits).
- `D JOB`: the job's lease is lost or its fetch over: its commands are killed now.

When a job's moment passes without a newer one, every process group started for it is
SIGKILLed through its pidfd (PIDFD_SIGNAL_PROCESS_GROUP: never another group that got the same
number since). When FD reaches its end (the daemon died, even by kill -9, or closed it as it
stopped) every command is killed and the fence exits. It needs nothing of the daemon while it
waits, so a daemon frozen whole (SIGSTOP), which its own watchdog thread cannot help, never
leaves a second upstream running beside the one another node starts. It tells the daemon
`K JOB PID` of each command it killed (dropped when nobody reads).

It imports only the standard library (about 10 MiB however many commands it guards), its
environment is empty, and its argv holds nothing but the descriptor's number.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import socket
import sys
import time

# Exit status of a command the fence stopped (as a shell reports SIGKILL), and of a gate that
# was refused before its command ran.
FENCED = 128 + signal.SIGKILL
# pidfd_send_signal's flag (Linux >= 6.9): the signal goes to the pidfd's process group.
_PIDFD_SIGNAL_PROCESS_GROUP = 4
# A gate reports "PID\n": anything longer is not a gate.
_REPORT_BYTES = 16
MAX_MESSAGE = 64 * 1024


class _Job:
    """What the fence knows of one job: its safe time and its commands' pidfds."""

    __slots__ = ("gates", "groups", "until")

    def __init__(self) -> None:
        self.until = 0.0  # 0: none known yet (a start is refused)
        self.groups: dict[int, int] = {}  # pid -> pidfd
        self.gates: dict[int, int] = {}  # report read end -> go write end


class Fence:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.jobs: dict[int, _Job] = {}
        self.poll = select.poll()
        self.poll.register(control, select.POLLIN)
        # Report read end -> job id, for the gates waiting.
        self.gates: dict[int, int] = {}
        self.daemon = os.getppid()

    def run(self) -> None:
        while True:
            ready = [fd for fd, _ in self.poll.poll(self._timeout_ms())]
            # Every message waiting first (a fence that fell behind reads the latest safe
            # times before it judges a start or a deadline by an older one).
            if self.control.fileno() in ready and not self._receive_all():
                self.kill_all()
                return
            for fd in ready:
                if fd in self.gates:
                    self._report(fd)
            self._expire(time.monotonic())

    def _receive_all(self) -> bool:
        """Reads every message waiting; False when the daemon is gone."""
        while select.select([self.control], [], [], 0)[0]:
            if not self._receive():
                return False
        return True

    def _timeout_ms(self) -> int:
        soonest = min(
            (job.until for job in self.jobs.values() if job.groups or job.gates), default=None
        )
        if soonest is None:
            return -1
        return max(0, math.ceil((soonest - time.monotonic()) * 1000))

    # -- the daemon's messages ---------------------------------------------------------------
    def _receive(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, 2)
        except (ConnectionResetError, BrokenPipeError):
            return False
        if not data:
            return False
        words = data.split()
        try:
            if words[0] == b"A" and len(words) == 2 and len(fds) == 2:
                self._arm(int(words[1]), fds[0], fds[1])
                fds = []
            elif words[0] == b"T" and len(words) % 2 == 1:
                for job_id, until in zip(words[1::2], words[2::2], strict=True):
                    value = float(until)
                    if math.isfinite(value):
                        self.jobs.setdefault(int(job_id), _Job()).until = value
            elif words[0] == b"D" and len(words) == 2:
                job = self.jobs.pop(int(words[1]), None)
                if job is not None:
                    self._kill(int(words[1]), job)
        except (IndexError, ValueError):
            print(f"tailhub fence: a message it does not know: {data[:80]!r}", file=sys.stderr)
        for fd in fds:
            os.close(fd)
        return True

    def _arm(self, job_id: int, report: int, go: int) -> None:
        job = self.jobs.setdefault(job_id, _Job())
        # A new command of the job: what is left of the last one goes (one upstream per job).
        self._kill(job_id, job)
        os.set_blocking(report, False)
        job.gates[report] = go
        self.gates[report] = job_id
        self.poll.register(report, select.POLLIN)

    def _report(self, report: int) -> None:
        job_id = self.gates.pop(report)
        self.poll.unregister(report)
        job = self.jobs[job_id]
        go = job.gates.pop(report)
        try:
            data = os.read(report, _REPORT_BYTES)
        except BlockingIOError:
            data = b""
        os.close(report)
        try:
            pidfd = self._admit(data, job)
            if pidfd is not None:
                os.write(go, b"go\n")  # (fits any pipe: never blocks)
        finally:
            os.close(go)  # refused: the gate reads its end and exits without running it

    def _admit(self, data: bytes, job: _Job) -> int | None:
        """A pidfd of the gate that reported `data`, registered with its job; None when it is
        refused (its job's lease is not safe now, or it is no gate of the daemon's)."""
        text = data.strip()
        if not data.endswith(b"\n") or not text.isdigit() or job.until <= time.monotonic():
            return None
        pid = int(text)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        # Checked after the pidfd is taken: the process it names cannot change any more.
        if _parent_and_group(pid) != (self.daemon, pid):
            os.close(pidfd)
            return None
        job.groups[pid] = pidfd
        return pidfd

    # -- killing ------------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        for job_id, job in self.jobs.items():
            if (job.groups or job.gates) and now >= job.until:
                self._kill(job_id, job)

    def _kill(self, job_id: int, job: _Job) -> None:
        for pid, pidfd in job.groups.items():
            if _kill_group(pid, pidfd):
                self._tell(f"K {job_id} {pid}")
            os.close(pidfd)
        job.groups.clear()
        for report, go in job.gates.items():
            self.poll.unregister(report)
            del self.gates[report]
            os.close(report)
            os.close(go)
        job.gates.clear()

    def kill_all(self) -> None:
        for job_id, job in self.jobs.items():
            self._kill(job_id, job)

    def _tell(self, message: str) -> None:
        with contextlib.suppress(OSError):  # (a daemon frozen or gone reads nothing)
            self.control.send(message.encode(), socket.MSG_DONTWAIT)


def _parent_and_group(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # After the command's name (which may hold spaces): state, ppid, pgrp.
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def _kill_group(pid: int, pidfd: int) -> bool:
    """SIGKILLs the process group `pid` led when its pidfd was taken; True if any was left."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL, None, _PIDFD_SIGNAL_PROCESS_GROUP)
        return True
    except ProcessLookupError:
        return False
    except OSError:  # a kernel before 6.9: by number, while the leader surely holds it
        pass
    if select.select([pidfd], [], [], 0)[0]:  # the leader exited: only it, by its pidfd
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m tailhub.daemon.process.fence FD", file=sys.stderr)
        return 2
    control = socket.socket(fileno=int(argv[0]))
    # Its parent's signals to the terminal's group (^C, ^Z) are not for it.
    for number in (signal.SIGINT, signal.SIGTSTP, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    Fence(control).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
