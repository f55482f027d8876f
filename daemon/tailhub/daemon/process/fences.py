"""The daemon's side of the node's fence (process/fence.py): one process for every command.

`NodeFence` starts the fence, tells it each job's safe time at every renewal (many jobs per
message), arms it before each command starts, and notices when it dies: it then starts a new
one and tells its owner which jobs' commands went unguarded, for them to be stopped (fail
closed: a command never runs a moment unfenced).

A command starts behind a gate, `gate_argv`: a shell (dash, about a millisecond) that writes
its pid to the fence and waits for `go` before it starts the command as its child, in the
process group it leads, so the fence holds a pidfd of the group's leader before the command
runs. A fence that is gone never says `go`: nothing starts without one.

The fence alone is not enough when it dies with the daemon (kill -9 of both at once, as
`pkill -9 -f tailhub.daemon` does): nobody would be left to kill the command, and another node
starts it again. So the gate itself runs under util-linux's `setpriv --pdeathsig USR1`, which
asks the kernel to signal it when its parent dies and execs the gate (the same pid throughout,
so the fence's pidfd and its check that the daemon is the parent hold); the gate then SIGKILLs
its whole group, the command's own children too. That comes before the gate reports: a daemon
that died earlier is no longer the parent, and the fence refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence

from tailhub.daemon.process.fence import MAX_MESSAGE

logger = logging.getLogger(__name__)

FENCE_MODULE = "tailhub.daemon.process.fence"
# The gate's $0 (what `ps` shows of it).
GATE_NAME = "tailhub-gate"
# $1: the go pipe's read end; $2: the report pipe's write end (the gate's own descriptors,
# reopened through /dev/fd: dash names no descriptor above 9). Refused: the fenced status.
# Once told go, the gate runs the command as its child and stays, waiting, with its status as
# its own: its parent-death signal (SIGUSR1, `die_with_parent`) then kills its whole process
# group, the command's children too (exec'ing the command in its place, only the command got
# it: a `tail` under `sh -c` lived on as an orphan). The trap is set first: before it, SIGUSR1
# ends the gate alone, before the command starts. SIGTERM and the like reach the whole group
# (the daemon's cancel); the gate lets the command answer and exits with its status.
_GATE = (
    "trap 'kill -KILL 0' USR1; "
    'exec 3</dev/fd/"$1" && printf "%s\\n" "$$" >/dev/fd/"$2" && read -r go <&3 '
    '&& [ "$go" = go ] || exit 137; shift 2; exec 3<&-; "$@" & c=$!; trap : TERM INT HUP; '
    'while :; do wait "$c"; s=$?; kill -0 "$c" 2>/dev/null || break; done; exit "$s"'
)
# How long a closing daemon waits for its fence to kill everything and exit.
_EXIT_SECONDS = 5.0


@functools.cache
def die_with_parent() -> tuple[str, ...]:
    """The prefix that makes a gate die with its parent (even by kill -9): setpriv asks the
    kernel for SIGUSR1 at its parent's death (PR_SET_PDEATHSIG; the gate kills its group on
    it), then execs the rest; empty without setpriv (then the fence alone stops a command
    whose daemon died). Not a preexec_fn: Python code between fork and exec is unsafe in a
    process with threads. Looked up once, when first needed (never by a daemon alone).

    The kernel sends the signal when the *thread* that forked exits, not the process: a
    command must be started from a thread that lives as long as the daemon (its event loop,
    in the main thread), never from a worker thread (`starting_thread_lives`)."""
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "USR1", "--") if setpriv else ()


def starting_thread_lives() -> bool:
    """Whether a command started from this thread dies only with the daemon (see above)."""
    return threading.current_thread() is threading.main_thread()


def gate_argv(go: int, report: int, argv: Sequence[str]) -> list[str]:
    """The argv that starts `argv` once the fence said go (`go`, `report`: the gate's ends),
    dying with the daemon (`die_with_parent`)."""
    return [*die_with_parent(), "/bin/sh", "-c", _GATE, GATE_NAME, str(go), str(report), *argv]


class NodeFence:
    """One fence process for the node's commands, started again if it dies."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._until: dict[int, float] = {}
        # Jobs with a command armed since their last drop: unguarded if the fence dies.
        self._armed: set[int] = set()
        self._closing = False
        self._starting = False
        # Told the jobs whose commands went unguarded when a fence died.
        self.on_death: Callable[[list[int]], None] = lambda jobs: None
        self.deaths = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Starts the fence (in the running loop, which notices its death)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-m", FENCE_MODULE, str(theirs.fileno())],
                # Nothing of the daemon's or any job's environment; its own session, so that
                # a signal to the daemon's group (^C, ^Z, a frozen group) leaves it be.
                env={},
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._control = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)
        # What the last one knew: the new one kills on the same moments.
        if self._until:
            self._send_until(self._until.items())

    def extend(self, until: dict[int, float]) -> None:
        """These jobs' leases are surely this node's until these moments (time.monotonic())."""
        self._until.update(until)
        self._send_until(until.items())

    def arm(self, job_id: int) -> tuple[int, int]:
        """The job's next command starts now: returns the gate's ends (go, report), to pass
        to it and close once it started. ConnectionError when no fence can be told (it died
        and a new one would not start)."""
        go_read, go_write = os.pipe()
        report_read, report_write = os.pipe()
        try:
            self._send(f"A {job_id}", [report_read, go_write])
        except BaseException:
            os.close(go_read)
            os.close(report_write)
            raise
        finally:
            os.close(report_read)
            os.close(go_write)
        self._armed.add(job_id)
        return go_read, report_write

    def drop(self, job_id: int) -> None:
        """The job's lease is lost, or its fetch over: its command, if any, is killed now."""
        known = self._until.pop(job_id, None) is not None
        if known or job_id in self._armed:  # (the fence forgets it too)
            self._armed.discard(job_id)
            with contextlib.suppress(ConnectionError):
                self._send(f"D {job_id}")

    def close(self) -> None:
        """The daemon stops: the fence kills every command and exits."""
        self._closing = True
        self._disconnect()
        if self._process is not None:
            try:
                self._process.wait(_EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    # -- internals ---------------------------------------------------------------------------
    def _send_until(self, items: Iterable[tuple[int, float]]) -> None:
        message = "T"
        with contextlib.suppress(ConnectionError):  # (the next fence is told them all)
            for job_id, until in items:
                part = f" {job_id} {until:.3f}"
                if len(message) + len(part) > MAX_MESSAGE // 2:
                    self._send(message)
                    message = "T"
                message += part
            if message != "T":
                self._send(message)

    def _send(self, message: str, fds: Sequence[int] = ()) -> None:
        for attempt in range(2):
            if self._control is None:
                self._restart()
            assert self._control is not None
            try:
                socket.send_fds(self._control, [message.encode()], fds)
                return
            except OSError as error:
                # Gone (or so far behind that its buffer is full: as good as gone).
                self._died(f"cannot tell it ({error.strerror})")
                if attempt:
                    raise ConnectionError(f"the fence cannot be told: {error.strerror}") from None

    def _restart(self) -> None:
        if self._closing or self._starting:  # (never a fence started from a fence's start)
            raise ConnectionError("the daemon is stopping, or a fence is starting")
        self._starting = True
        try:
            self.start()
        except OSError as error:
            raise ConnectionError(f"the fence cannot start: {error.strerror}") from None
        finally:
            self._starting = False

    def _readable(self) -> None:
        assert self._control is not None
        while True:
            try:
                data = self._control.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._died("it exited")
                return
            words = data.split()
            if len(words) == 3 and words[0] == b"K":
                logger.info(
                    "job %s: the fence killed its upstream command (pid %s): its lease's "
                    "safe time passed, or the lease was lost",
                    words[1].decode(),
                    words[2].decode(),
                )

    def _died(self, how: str) -> None:
        if self._closing or self._control is None:
            return
        self.deaths += 1
        process = self._process
        self._disconnect()
        if process is not None:
            # (Gone already, or stuck: either way no longer trusted with a deadline.)
            with contextlib.suppress(OSError):
                process.kill()
            process.wait()
        unguarded = sorted(self._armed)
        self._armed.clear()
        logger.error(
            "the fence around this node's upstream commands died (%s, exit status %s); "
            "a new one starts, and the commands it guarded stop: %s",
            how,
            None if process is None else process.returncode,
            ", ".join(f"job {job_id}" for job_id in unguarded) or "none",
        )
        # After the call at hand (a start, a renewal) is over, not in the middle of it.
        asyncio.get_running_loop().call_soon(self.on_death, unguarded)

    def _disconnect(self) -> None:
        if self._control is None:
            return
        with contextlib.suppress(RuntimeError):  # (a loop already closed)
            asyncio.get_running_loop().remove_reader(self._control.fileno())
        self._control.close()
        self._control = None
