"""The `skypilot` source: the job's `sky jobs launch` (no -d), then, only if it drops before
the log ends or the daemon restarted, `sky jobs logs --tail 0 ID`, run again when it drops.

A launch without -d prints its submission lines, then the log exactly as `sky jobs logs`
streams it, then a hint with the managed job id (sky.LaunchOutput keeps only the log). Its id
comes after the log: a launch that ends early, or a restart, finds it with one
`sky jobs queue -o json` (sky.find_launched) and goes on with `sky jobs logs`.

SkyPilot replays the whole log on every run, and a replay after a recovery is not byte-exact
(the task prefix carries a new pid). So the log is kept in whole lines: a line is stored
only once its newline arrived (a half line at a drop comes again in the replay), and a
reconnect skips as many replayed lines as are stored, comparing their bytes while they
match and saying in an event when they did not. A line longer than `_MAX_HELD_BYTES` is not
held whole (memory stays bounded): its start is stored, and a replay skips that many bytes of
the line after the whole ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from tailhub.daemon.domain import MANAGED_JOB_ID, JobState, SkyPilotSpec
from tailhub.daemon.errors import UpstreamFailed, UpstreamUnusable
from tailhub.daemon.process import CommandWrap, as_is
from tailhub.daemon.process.fence import FENCED as REFUSED
from tailhub.daemon.runner import LocalRunner, RunHandle
from tailhub.daemon.sky import (
    ANSI,
    CANCELLED,
    FAILED,
    LAUNCHED_AT,
    LOG_STARTED_AT,
    NOT_FINISHED,
    NOT_FOUND,
    SKY_NAME,
    SUBMITTING,
    SUCCEEDED,
    TASK_PATH,
    USAGE_ERROR,
    LaunchOutput,
    SkyCli,
    SkyResult,
    find_launched,
    managed_job_ids,
    message_of,
    terminate,
)
from tailhub.daemon.sources.base import Outcome, Upstream
from tailhub.daemon.sources.command import (
    READ_BYTES,
    start_connecting,
    stop_left_over,
)

# Resume state: how many lines the log holds, and how many bytes of an unfinished line after
# them, valid while its size is `_LINES_AT`.
_LINES = "lines"
_PARTIAL = "partial"
_LINES_AT = "lines_at"
# The most of an unfinished line held back in memory before its start is stored.
_MAX_HELD_BYTES = 1024 * 1024
_KEPT_STDERR_BYTES = 16 * 1024
# Reading the stored log back, to count its lines or compare a replay with it.
_READ_BACK_BYTES = 1024 * 1024
# How many stored lines a replay's first line is looked for in (see _Replay._align_to), and
# what was found: stored lines before the replayed ones, and their size.
_ALIGN_LINES = 64
_EXTRA_LINES = "extra_lines"
_EXTRA_AT = "extra_at"
# The line count is saved with the log this often, so that a recount after a crash is short.
_SAVE_EVERY_BYTES = 64 * 1024 * 1024
# The one `sky jobs queue` call that confirms a failure may take this long.
_QUEUE_TIMEOUT = 60.0


@dataclass
class SkyPilotSource:
    spec: SkyPilotSpec
    sky: SkyCli
    runner: LocalRunner
    # Bounds how many upstreams are connecting at once, daemon-wide (as for commands).
    connecting: asyncio.Semaphore
    # The job's id, and how its `sky` processes are started (as they are, or behind a cluster
    # node's fence, which kills them when its lease may end: never two fetches of one job).
    job_id: int = 0
    wrap: CommandWrap = as_is
    counts_connections: ClassVar[bool] = True

    async def fetch(self, upstream: Upstream) -> Outcome | None:
        await stop_left_over(self.runner, upstream)
        state = upstream.state
        managed_id = self.spec.managed_job_id or state.get(MANAGED_JOB_ID)
        if not isinstance(managed_id, int):
            if state.get(SUBMITTING) and LAUNCHED_AT not in state:
                return await self._launch(upstream)
            managed_id = await self._find_launched(upstream)
        stored_lines, stored_partial = await _stored_lines(upstream)
        process, connected = await self._connect(
            self.sky.logs_argv(managed_id), self._environment()
        )
        replay = _Replay(upstream, stored_lines, stored_partial, launched=LAUNCHED_AT in state)
        exit_code, errors = await _stream(process, connected, upstream, replay, None)
        replay.report()
        assert exit_code is not None  # (no deadline)
        return await self._outcome(managed_id, exit_code, errors)

    async def _launch(self, upstream: Upstream) -> Outcome:
        """The job's first upstream: the `sky jobs launch` (no -d) that submits it, whose
        output after the submission is the log as `sky jobs logs` streams it."""
        state = upstream.state
        spec = self.spec
        task_path, name = state.get(TASK_PATH), state.get(SKY_NAME)
        if not isinstance(task_path, str) or not isinstance(name, str):
            raise UpstreamUnusable("the SkyPilot job was never submitted: no task file")
        argv = self.sky.launch_argv(task_path, name, spec.envs)
        # Before `sky` runs: a restart after this never launches again.
        state[LAUNCHED_AT] = time.time()
        upstream.save_state()
        environment = self.sky.launch_environment(spec.environment, spec.envs)
        try:
            process, connected = await self._connect(argv, environment)
        except UpstreamFailed:
            # The node's fence would not start it (cluster mode, wrap): `sky` never ran, so
            # the retry launches.
            del state[LAUNCHED_AT]
            upstream.save_state()
            raise
        cut = LaunchOutput()
        exit_code, errors = await _stream(
            process, connected, upstream, _Replay(upstream, 0, 0), cut, self.sky.submit_timeout
        )
        ids = managed_job_ids(cut.said)
        if exit_code == REFUSED and not cut.said and not errors:
            # Its gate was refused (a lease not safe): `sky` never ran, the retry launches.
            del state[LAUNCHED_AT]
            upstream.save_state()
            raise UpstreamFailed("the node's fence did not start `sky jobs launch`", exit_code)
        if exit_code is None:
            timeout = self.sky.submit_timeout
            return _failed(f"`sky jobs launch` took longer than {timeout:.0f}s")
        if not cut.log_started and (exit_code != SUCCEEDED or not ids):
            result = SkyResult(exit_code, cut.said, errors)
            return _failed(message_of(result) or f"sky jobs launch exited with {exit_code}")
        managed_id = ids[-1] if ids else await self._find_launched(upstream)
        self._record(upstream, managed_id)
        if cut.ended and exit_code in (SUCCEEDED, FAILED, CANCELLED, NOT_FOUND):
            return await self._outcome(managed_id, exit_code, errors)
        raise UpstreamFailed(
            f"sky jobs launch ended before the log did ({exit_code}): following with sky jobs logs",
            exit_code,
        )

    async def _find_launched(self, upstream: Upstream) -> int:
        """The id of a job launched here whose launch ended (or the daemon stopped) before
        SkyPilot printed it."""
        try:
            managed_id = await find_launched(self.sky, self._environment(), upstream.state)
        except LookupError as error:
            raise UpstreamUnusable(f"the SkyPilot job cannot be followed: {error}") from None
        except OSError as error:
            raise UpstreamUnusable(
                f"cannot run {self.sky.path}: {error.strerror}", exit_code=127
            ) from error
        self._record(upstream, managed_id)
        upstream.event(f"SkyPilot managed job {managed_id} (found with sky jobs queue)")
        return managed_id

    @staticmethod
    def _record(upstream: Upstream, managed_id: int) -> None:
        if upstream.state.get(MANAGED_JOB_ID) != managed_id:
            upstream.state[MANAGED_JOB_ID] = managed_id
            upstream.state.pop(SUBMITTING, None)
            upstream.save_state()

    async def _connect(
        self, argv: list[str], environment: dict[str, str]
    ) -> tuple[asyncio.subprocess.Process, Callable[[], None]]:
        return await start_connecting(self.connecting, lambda: self._start(argv, environment))

    def _environment(self) -> dict[str, str]:
        # An attached job (no task of ours) came with no client environment: the daemon's.
        return self.sky.environment(self.spec.environment, attached=not self.spec.task_yaml)

    async def _start(
        self, argv: list[str], environment: dict[str, str]
    ) -> asyncio.subprocess.Process:
        command = self.wrap(self.job_id, argv, environment)
        try:
            return await asyncio.create_subprocess_exec(
                *command.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=command.env,
                cwd=self.spec.workdir or None,
                start_new_session=True,
                pass_fds=command.pass_fds,
            )
        except OSError as error:
            raise UpstreamUnusable(
                f"cannot run {self.sky.path}: {error.strerror}", exit_code=127
            ) from error
        finally:
            command.started()

    async def _outcome(self, managed_id: int, exit_code: int, errors: str) -> Outcome:
        if exit_code < 0:
            exit_code = 128 - exit_code  # killed by a signal, as a shell reports it
        if exit_code == SUCCEEDED:
            return Outcome(0, f"SkyPilot job {managed_id} succeeded", JobState.SUCCEEDED)
        if exit_code == CANCELLED:
            return Outcome(
                CANCELLED, f"SkyPilot job {managed_id} was cancelled", JobState.CANCELLED
            )
        if exit_code == FAILED:
            return Outcome(FAILED, await self._failure(managed_id), JobState.FAILED)
        if exit_code == NOT_FOUND:
            return Outcome(NOT_FOUND, f"SkyPilot has no managed job {managed_id}", JobState.FAILED)
        if exit_code == NOT_FINISHED:
            raise UpstreamFailed("sky jobs logs ended, the job did not", exit_code, healthy=True)
        if exit_code == USAGE_ERROR and "--tail" in errors and not self.sky.no_tail_option:
            # A SkyPilot before 0.13: its `sky jobs logs` replays the whole log anyway.
            self.sky.no_tail_option = True
            raise UpstreamFailed("this sky has no `jobs logs --tail`; following without it", 2)
        last = _last_line(errors)
        detail = f": {last}" if last else ""
        raise UpstreamFailed(f"sky jobs logs exited with {exit_code}{detail}", exit_code)

    async def _failure(self, managed_id: int) -> str:
        """Why the job failed, from one `sky jobs queue -o json` (absent before 0.13)."""
        reason = f"SkyPilot job {managed_id} failed"
        try:
            result = await self.sky.run(
                self.sky.queue_argv(),
                self._environment(),
                timeout=_QUEUE_TIMEOUT,
            )
            rows = json.loads(result.stdout) if result.exit_code == 0 else []
        except (OSError, ValueError):
            return reason
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and row.get("job_id") == managed_id:
                status = row.get("status") or "FAILED"
                why = row.get("failure_reason") or ""
                return f"{reason} ({status}{': ' + str(why) if why else ''})"
        return reason


def _failed(reason: str) -> Outcome:
    """A submission that failed: the job fails with SkyPilot's own words."""
    return Outcome(FAILED, reason, JobState.FAILED)


async def _stream(
    process: asyncio.subprocess.Process,
    connected: Callable[[], None],
    upstream: Upstream,
    replay: _Replay,
    cut: LaunchOutput | None,
    submit_timeout: float | None = None,
) -> tuple[int | None, str]:
    """Stores a `sky` process's stdout in whole lines (through `cut` for a launch: only its
    log) until it exits; returns its exit code (None: no log within `submit_timeout`) and
    the end of its stderr. Whatever happens, the process is stopped and the count saved."""
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = asyncio.create_task(_read_tail(process.stderr))
    deadline = None if submit_timeout is None else time.monotonic() + submit_timeout
    exit_code: int | None = None
    errors = ""
    try:
        # Inside the try: a save that fails (a full disk) still stops the process.
        upstream.state.update(RunHandle.of(process.pid).to_json())
        upstream.save_state()
        partial = b""
        while data := await _read(process.stdout, cut, deadline):
            connected()
            end = data.rfind(b"\n")
            if end < 0:
                partial += data
                if len(partial) >= _MAX_HELD_BYTES:
                    replay.take(cut.piece(partial) if cut else partial)
                    partial = b""
                continue
            lines, partial = partial + data[: end + 1], data[end + 1 :]
            if cut is None:
                replay.take(lines)
            else:
                _take_launch_lines(upstream, replay, cut, lines)
            replay.save_now_and_then()
        exit_code = await process.wait()
        errors = await stderr
        if exit_code in (SUCCEEDED, FAILED, CANCELLED, NOT_FOUND):
            # The stream ended, not dropped: its last line is whole.
            tail = (cut.piece(partial) if partial else cut.finish()) if cut else partial
            if tail:
                replay.take(tail)
    except asyncio.TimeoutError:
        exit_code = None
    finally:
        connected()
        if process.returncode is None:
            await terminate(process)
        stderr.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stderr
        replay.save()
    return exit_code, errors


def _take_launch_lines(
    upstream: Upstream, replay: _Replay, cut: LaunchOutput, lines: bytes
) -> None:
    started = cut.log_started
    log = cut.lines(lines)
    if cut.log_started and not started:
        # SkyPilot took the job: a restart from here on finds it, never launches it again.
        upstream.state[LOG_STARTED_AT] = time.time()
        upstream.save_state()
        upstream.event("submitted to SkyPilot; its managed job id comes with the log's end")
    replay.take(log)


async def _read(
    stream: asyncio.StreamReader, cut: LaunchOutput | None, deadline: float | None
) -> bytes:
    """The next bytes; until a launch's log begins, within its deadline (TimeoutError)."""
    if cut is None or cut.log_started or deadline is None:
        return await stream.read(READ_BYTES)
    return await asyncio.wait_for(stream.read(READ_BYTES), max(0.0, deadline - time.monotonic()))


class _Replay:
    """Appends whole lines, first skipping the `skip` lines a reconnect replays."""

    def __init__(
        self, upstream: Upstream, skip: int, skip_partial: int, *, launched: bool = False
    ) -> None:
        self._upstream = upstream
        self._lines = skip
        # Stored lines of a launch's that `sky jobs logs` does not replay, and where the
        # replayed ones start (found at the first replay, see _align_to).
        extra = int(upstream.state.get(_EXTRA_LINES, 0))
        self._skip = max(0, skip - extra)
        # Bytes of an unfinished line stored after the whole ones: skipped after them.
        self._skip_partial = skip_partial
        self._tail = skip_partial
        self._skipped = 0
        # Where the next replayed line should be in the stored log, while bytes match.
        self._offset: int | None = int(upstream.state.get(_EXTRA_AT, 0))
        self._mismatch_at: int | None = None
        self._saved_at = upstream.stored
        self._align = launched and _EXTRA_LINES not in upstream.state

    def take(self, data: bytes) -> None:
        """Whole lines, or a long line's start (then its continuation comes next)."""
        if self._skip or self._skip_partial:
            data = self._skip_replayed(data)
        if data:
            self._upstream.append(data)
            newlines = data.count(b"\n")
            self._lines += newlines
            last = data.rfind(b"\n")
            self._tail = len(data) - last - 1 if last >= 0 else self._tail + len(data)

    def _skip_replayed(self, data: bytes) -> bytes:
        if self._align and b"\n" in data:
            self._align = False
            self._align_to(data[: data.index(b"\n") + 1])
        start = 0
        while self._skip and start < len(data):
            end = data.find(b"\n", start)
            whole = end >= 0
            end = end + 1 if whole else len(data)
            self._compare(data[start:end])
            if whole:  # a long line comes in pieces: it counts once its newline came
                self._skipped += 1
                self._skip -= 1
            start = end
        if not self._skip and self._skip_partial and start < len(data):
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end + 1
            piece = data[start : start + min(self._skip_partial, end - start)]
            self._compare(piece)
            self._skip_partial -= len(piece)
            start += len(piece)
        return data[start:]

    def _align_to(self, first: bytes) -> None:
        """A launch's output may hold lines after its submission that are not the log's (a
        SkyPilot whose API server prints more of the launch, such as the controller's
        start): stored, they are not replayed. The replay is followed from the stored line
        equal to its first, if one of the first `_ALIGN_LINES` is; else from the start."""
        state = self._upstream.state
        state[_EXTRA_LINES], state[_EXTRA_AT] = 0, 0  # (saved with the count)
        stored = self._upstream.read(0, min(self._upstream.stored, _READ_BACK_BYTES))
        offset = 0
        for index, line in enumerate(stored.split(b"\n")[:_ALIGN_LINES]):
            if line + b"\n" == first:
                if index and index < self._skip:
                    self._skip -= index
                    self._offset = offset
                    state[_EXTRA_LINES], state[_EXTRA_AT] = index, offset
                    self._upstream.event(
                        f"the launch stored {index} lines before the log sky jobs logs "
                        "replays; following the replay from there"
                    )
                return
            offset += len(line) + 1

    def _compare(self, piece: bytes) -> None:
        """Follows the replay through the stored log while their bytes agree."""
        if self._offset is None:
            return
        if self._upstream.read(self._offset, len(piece)) == piece:
            self._offset += len(piece)
        else:
            self._offset = None
            self._mismatch_at = self._skipped + 1

    def save_now_and_then(self) -> None:
        """Saves the line count every `_SAVE_EVERY_BYTES` of log: a daemon killed mid-stream
        then recounts only what came after it, not a multi-GB log."""
        if self._upstream.stored - self._saved_at >= _SAVE_EVERY_BYTES:
            self.save()

    def save(self) -> None:
        self._saved_at = self._upstream.stored
        self._upstream.state[_LINES] = self._lines
        self._upstream.state[_PARTIAL] = self._tail
        self._upstream.state[_LINES_AT] = self._upstream.stored
        self._upstream.save_state()

    def report(self) -> None:
        if self._mismatch_at is not None:
            self._upstream.event(
                f"sky jobs logs replayed a log that differs from the stored one from line "
                f"{self._mismatch_at} on (a recovery?); skipped {self._skipped} lines by count"
            )
        if self._skip:
            self._upstream.event(
                f"sky jobs logs replayed {self._skipped} lines, fewer than the "
                f"{self._skipped + self._skip} already stored"
            )


async def _stored_lines(upstream: Upstream) -> tuple[int, int]:
    """Whole lines in the stored log and the bytes of an unfinished one after them:
    remembered, or counted on from the last count saved when the record is behind the log
    (in a thread: a long log must not stall every other job and follower)."""
    stored = upstream.stored
    count, tail = int(upstream.state.get(_LINES, 0)), int(upstream.state.get(_PARTIAL, 0))
    counted_at = upstream.state.get(_LINES_AT)
    if counted_at == stored:
        return count, tail
    if not isinstance(counted_at, int) or counted_at > stored:
        counted_at, count, tail = 0, 0, 0  # never counted, or the log was cut: from its start
    # The first piece here: the log opens its read descriptor (if it needs one) on the loop,
    # not in the thread while a follower's read might open it too.
    counted_at, count, tail = _count_lines(upstream, counted_at, stored, count, tail, pieces=1)
    if counted_at < stored:
        counted_at, count, tail = await asyncio.to_thread(
            _count_lines, upstream, counted_at, stored, count, tail
        )
    return count, tail


def _count_lines(
    upstream: Upstream, offset: int, end: int, count: int, tail: int, pieces: int | None = None
) -> tuple[int, int, int]:
    """Counts on from `offset` to `end` (at most `pieces` reads); returns where it stopped."""
    while offset < end and pieces != 0:
        data = upstream.read(offset, min(_READ_BACK_BYTES, end - offset))
        if not data:
            return end, count, tail
        count += data.count(b"\n")
        last = data.rfind(b"\n")
        tail = len(data) - last - 1 if last >= 0 else tail + len(data)
        offset += len(data)
        if pieces is not None:
            pieces -= 1
    return offset, count, tail


async def _read_tail(stream: asyncio.StreamReader) -> str:
    kept = b""
    while data := await stream.read(READ_BYTES):
        kept = (kept + data)[-_KEPT_STDERR_BYTES:]
    return kept.decode(errors="replace")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in ANSI.sub("", text).splitlines() if line.strip()]
    return lines[-1] if lines else ""
