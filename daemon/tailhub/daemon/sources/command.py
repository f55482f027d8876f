"""The `command` source: an argv whose stdout (stderr merged, or as events) is the log.

This is how remote logs are reached (`ssh host tail -n +1 -f run.log`, `kubectl logs -f`).
When the command dies with a transport exit code, the fetcher runs it again; it replays the
log from its start, and the bytes already stored are skipped, so none is lost or repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

from tailhub.daemon.domain import CommandSpec
from tailhub.daemon.errors import UpstreamFailed, UpstreamUnusable
from tailhub.daemon.faults import AFTER_STDERR_APPEND, crash_at
from tailhub.daemon.process import CommandWrap, as_is
from tailhub.daemon.runner import LocalRunner, RunHandle, terminate_group
from tailhub.daemon.sources.base import Outcome, Upstream
from tailhub.daemon.sources.ssh_share import SshShare, no_session

READ_BYTES = 256 * 1024
# How long a command gets to exit after SIGTERM when the daemon stops fetching it.
TERMINATE_GRACE = 2.0
# A command counts as connecting until its first byte, its exit, or this many seconds.
CONNECT_SETTLE_SECONDS = 5.0
# Resume state: how many bytes of the log came from stderr (not replayed on reconnect).
_STDERR_BYTES = "stderr_bytes"
# Resume state: a stderr append in progress, [log size before it, its length], saved first.
_STDERR_PENDING = "stderr_pending"
_MAX_EVENT_CHARS = 1000
# Of stderr, the tail kept to name a failed connection's cause, and how much of it is told.
_LAST_LINE_BYTES = 1024
_MAX_REASON_CHARS = 300


@dataclass
class CommandSource:
    """Runs the command; stdout is the log, stderr merged into it or reported as events.

    The replay skip counts only stdout bytes: what the command itself prints on stderr
    (ssh's "Connection reset by peer") is not part of what a reconnect replays.
    """

    spec: CommandSpec
    transport_exit_codes: frozenset[int]
    # Tells the command's process apart from a later one with the same pid.
    runner: LocalRunner
    # Bounds how many commands are connecting at once, daemon-wide (see DaemonConfig).
    connecting: asyncio.Semaphore
    # Fault injection for tests (see faults.py).
    crash_points: frozenset[str] = frozenset()
    # The job's id, and how its command is started (as it is, or wrapped by where the job
    # is placed: process/).
    job_id: int = 0
    wrap: CommandWrap = as_is
    # How an `ssh` command shares one connection per destination (ssh_share.py); None: not.
    ssh_share: SshShare | None = None
    # Ends the running command's session of a shared ssh connection.
    _end_session: Callable[[], None] = field(default_factory=lambda: no_session, init=False)
    counts_connections: ClassVar[bool] = True

    async def fetch(self, upstream: Upstream) -> Outcome | None:
        _settle_stderr_journal(upstream)
        await stop_left_over(self.runner, upstream)
        process, connected = await start_connecting(self.connecting, self._start)
        assert process.stdout is not None
        assert process.stderr is not None
        said = _LastLine()
        stderr = asyncio.create_task(self._pump_stderr_or_stop(process, upstream, said))
        skip = upstream.stored - int(upstream.state.get(_STDERR_BYTES, 0))
        try:
            # Remembered so that a daemon restarted after a crash can stop it: one fetch per
            # job. Inside the try: a save that fails (a full disk) still stops the command.
            upstream.state.update(RunHandle.of(process.pid).to_json())
            upstream.save_state()
            while data := await process.stdout.read(READ_BYTES):
                connected()
                if skip:
                    dropped = min(skip, len(data))
                    skip -= dropped
                    data = data[dropped:]
                    if not data:
                        continue
                upstream.append(data)
            await stderr
            exit_code = await process.wait()
        finally:
            connected()
            if process.returncode is None:
                await terminate_group(process, TERMINATE_GRACE)
            self._end_session()
            stderr.cancel()
            await asyncio.wait([stderr])
            if not stderr.cancelled():
                stderr.exception()  # read: an error it ended with is reported by stdout's end
        if exit_code < 0:
            exit_code = 128 - exit_code  # killed by a signal, as a shell reports it
        if exit_code in self.transport_exit_codes:
            # With what it said last on stderr: "exited with 255" alone does not tell a
            # host that does not resolve from one that refused the key.
            detail = f": {said.text()}" if said.text() else ""
            raise UpstreamFailed(f"command exited with {exit_code}{detail}", exit_code)
        if skip:
            upstream.event(f"command replayed {skip} bytes fewer than were already stored")
        return Outcome(exit_code, reason=f"command exited with {exit_code}")

    async def _pump_stderr_or_stop(
        self, process: asyncio.subprocess.Process, upstream: Upstream, said: _LastLine
    ) -> None:
        """Pumps stderr; if that fails (a full disk), stops the command so stdout ends too."""
        assert process.stderr is not None
        try:
            await self._pump_stderr(process.stderr, upstream, said)
        except Exception:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            raise

    async def _pump_stderr(
        self, stream: asyncio.StreamReader, upstream: Upstream, said: _LastLine
    ) -> None:
        if self.spec.stderr_events:
            # Lines by hand: StreamReader.readline fails on a line longer than its buffer.
            pending = b""
            while data := await stream.read(READ_BYTES):
                said.feed(data)
                *lines, pending = (pending + data).split(b"\n")
                if len(pending) > _MAX_EVENT_CHARS:
                    lines.append(pending)
                    pending = b""
                for line in lines:
                    _report_stderr(upstream, line)
            _report_stderr(upstream, pending)
            return
        while data := await stream.read(READ_BYTES):
            said.feed(data)
            # Journaled: the intent is saved before the append and the count after it, so a
            # daemon killed in between finds out from the log's size whether it landed.
            upstream.state[_STDERR_PENDING] = [upstream.stored, len(data)]
            upstream.save_state()
            upstream.append(data, progress=False)
            crash_at(self.crash_points, AFTER_STDERR_APPEND)
            upstream.state[_STDERR_BYTES] = int(upstream.state.get(_STDERR_BYTES, 0)) + len(data)
            del upstream.state[_STDERR_PENDING]
            upstream.save_state()

    async def _start(self) -> asyncio.subprocess.Process:
        # Its own process group, so that stopping it stops what it started too.
        if self.spec.shell:
            argv = ["/bin/sh", "-c", self.spec.argv[0]]
        elif self.ssh_share is not None:
            argv, self._end_session = await self.ssh_share.session(self.spec.argv)
        else:
            argv = [*self.spec.argv]
        try:
            command = self.wrap(self.job_id, argv)
            try:
                return await asyncio.create_subprocess_exec(
                    *command.argv,
                    env=command.env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                    pass_fds=command.pass_fds,
                )
            finally:
                command.started()
        except BaseException as error:
            self._end_session()  # (it never started)
            if isinstance(error, OSError):
                raise UpstreamUnusable(
                    f"cannot run {self.spec.describe()}: {error.strerror}", exit_code=127
                ) from error
            raise


async def stop_left_over(runner: LocalRunner, upstream: Upstream) -> None:
    """Stops the command a crashed daemon left running; its output has nowhere to go."""
    handle = RunHandle.from_json(upstream.state)
    if handle is None or not runner.is_running(handle):
        return
    runner.signal(handle, signal.SIGTERM)
    try:
        await asyncio.wait_for(runner.wait_for_exit(handle), TERMINATE_GRACE)
    except asyncio.TimeoutError:
        runner.signal(handle, signal.SIGKILL)
        await runner.wait_for_exit(handle)


def _settle_stderr_journal(upstream: Upstream) -> None:
    """Completes a stderr append that a crash interrupted: counted if it reached the log."""
    pending = upstream.state.pop(_STDERR_PENDING, None)
    if pending is None:
        return
    before, length = int(pending[0]), int(pending[1])
    if upstream.stored >= before + length:
        upstream.state[_STDERR_BYTES] = int(upstream.state.get(_STDERR_BYTES, 0)) + length
    elif upstream.stored > before:
        upstream.discard_after(before)  # part of it: as if none had been written
    upstream.save_state()


class _LastLine:
    """The last line a command printed on stderr, from a bounded tail of it."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> None:
        self._tail = (self._tail + data)[-_LAST_LINE_BYTES:]

    def text(self) -> str:
        lines = [line for line in self._tail.split(b"\n") if line.strip()]
        if not lines:
            return ""
        return lines[-1].decode(errors="replace").strip()[:_MAX_REASON_CHARS]


def _report_stderr(upstream: Upstream, line: bytes) -> None:
    text = line.decode(errors="replace").rstrip()[:_MAX_EVENT_CHARS]
    if text:
        upstream.event(f"stderr: {text}")


async def start_connecting(
    connecting: asyncio.Semaphore, start: Callable[[], Awaitable[asyncio.subprocess.Process]]
) -> tuple[asyncio.subprocess.Process, Callable[[], None]]:
    """Starts an upstream process in one of the daemon's connecting slots. Returns it and
    `connected`, which frees the slot: call it at the first byte and when the process is
    done; the slot is freed anyway after CONNECT_SETTLE_SECONDS."""
    await connecting.acquire()
    release = _Once(connecting.release)
    try:
        process = await start()
    except BaseException:
        release()
        raise
    settled = asyncio.get_running_loop().call_later(CONNECT_SETTLE_SECONDS, release)

    def connected() -> None:
        settled.cancel()
        release()

    return process, connected


class _Once:
    """Calls `action` the first time it is called, never again."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()
