"""The `sky` command line as the daemon uses it: how it is run and how its output is read.

What SkyPilot prints and how it exits is written down in docs/skypilot-contract.md; the
regular expressions and exit codes here follow that document.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tailhub.daemon.config import minimal_environment
from tailhub.daemon.runner import terminate_group

ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MANAGED_JOB_ID = re.compile(r"^Managed Job ID: (\d+)$")
_JOBS_SUBMITTED = re.compile(r"^Jobs submitted with IDs: ([0-9][0-9,\s-]*)\.$")
# The API server's last line of a launch (core.py:1026-1029): the managed job exists; without
# -d, what follows is its log, exactly as `sky jobs logs` streams it (command.py:5917-5921).
_LAUNCHING = re.compile(r"^Launching managed job '.*'( from jobs controller)?\.\.\.$")
# The hint printed after the log (ux_utils.py:285-296): a blank line, then this one.
_HINT = "\U0001f4cb Useful Commands"
# Resume state of a launch: submitting (no managed job id yet), `sky jobs launch` was
# started (wall time), and its log began
# (SkyPilot took the job, whose id it prints only after the log); the task file and name.
SUBMITTING = "submitting"
LAUNCHED_AT = "launched_at"
LOG_STARTED_AT = "log_started_at"
TASK_PATH = "task_path"
SKY_NAME = "sky_name"
# A job of ours has a submission time between its launch and its log's start, give or take
# this much (the API server's clock, the double's rounding).
_SUBMITTED_SLACK = 5.0
# `sky jobs queue -o json` prints every field of every listed job: kept whole up to this.
_QUEUE_OUTPUT_BYTES = 16 * 1024 * 1024
_QUEUE_TIMEOUT = 60.0
# `sky jobs logs` exit codes (SkyPilot's JobExitCode).
SUCCEEDED, FAILED, NOT_FINISHED, NOT_FOUND, CANCELLED = 0, 100, 101, 102, 103
USAGE_ERROR = 2
# How much of a `sky` process's output is kept to find its message in.
_KEPT_OUTPUT_BYTES = 64 * 1024
# Seconds a stopped `sky` gets between SIGTERM and SIGKILL.
_TERMINATE_GRACE = 2.0


@dataclass(frozen=True)
class SkyResult:
    """A finished `sky` run: its exit code (None: timed out) and what it printed."""

    exit_code: int | None
    stdout: str
    stderr: str


@dataclass
class SkyCli:
    """One `sky` executable: its path and what is known of its version."""

    path: str
    # The daemon's own environment: what an attached job's `sky` runs with (no client sent
    # one), and where a launched job's minimal one comes from.
    fallback_environment: Mapping[str, str] = field(default_factory=dict)
    # Set once `sky jobs logs --tail 0` was refused: a CLI before SkyPilot 0.13.
    no_tail_option: bool = False
    # How long `sky jobs launch` may take until SkyPilot took the job (its log begins).
    submit_timeout: float = 600.0

    def environment(
        self, given: Sequence[tuple[str, str]], *, attached: bool = False
    ) -> dict[str, str]:
        """The client's environment; without one, the daemon's for an attached job, and for a
        launched job a minimal one (HOME, USER, PATH...): never the daemon's whole one, as
        LaunchJobRequest promises."""
        if given:
            return dict(given)
        if attached:
            return dict(self.fallback_environment)
        return dict(minimal_environment(self.fallback_environment))

    def launch_argv(self, task_path: str, name: str, envs: Sequence[tuple[str, str]]) -> list[str]:
        """Without -d: the same process streams the job's log after submitting it (one `sky`
        per job). `--env KEY` without its value: the value travels in the process's environment
        (`launch_environment`), since any local user can read a command line."""
        argv = [self.path, "jobs", "launch", "-y"]
        if name:
            argv += ["-n", name]
        for key, _ in envs:
            argv += ["--env", key]
        return [*argv, task_path]

    def launch_environment(
        self, given: Sequence[tuple[str, str]], envs: Sequence[tuple[str, str]]
    ) -> dict[str, str]:
        """The environment of `sky jobs launch`: the client's, plus the task's `--env` values
        (SkyPilot reads a bare `--env KEY` from its environment)."""
        return {**self.environment(given), **dict(envs)}

    def logs_argv(self, managed_job_id: int) -> list[str]:
        tail = [] if self.no_tail_option else ["--tail", "0"]
        return [self.path, "jobs", "logs", *tail, str(managed_job_id)]

    def cancel_argv(self, managed_job_id: int) -> list[str]:
        return [self.path, "jobs", "cancel", "-y", str(managed_job_id)]

    def queue_argv(self) -> list[str]:
        return [self.path, "jobs", "queue", "-o", "json"]

    async def run(
        self,
        argv: Sequence[str],
        environment: Mapping[str, str],
        *,
        cwd: str | None = None,
        timeout: float,
        kept: int = _KEPT_OUTPUT_BYTES,
    ) -> SkyResult:
        """Runs `sky` to its end: stdin /dev/null (SkyPilot prompts otherwise), its own
        process group (stopped whole on timeout or cancellation). OSError if it cannot start."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(environment),
            cwd=cwd or None,
            start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except asyncio.TimeoutError:
            await terminate(process)
            return SkyResult(None, "", "")
        finally:
            if process.returncode is None:
                await terminate(process)
        return SkyResult(
            process.returncode,
            stdout[-kept:].decode(errors="replace"),
            stderr[-_KEPT_OUTPUT_BYTES:].decode(errors="replace"),
        )


class LaunchOutput:
    """Splits what a `sky jobs launch` without -d prints: its submission lines, then the job's
    log (stored), then the hint that gives the managed job id (not stored). Fed whole lines;
    a blank line is held back until the next one shows whether the hint begins."""

    def __init__(self) -> None:
        self.log_started = False
        self.ended = False  # the hint began: the log is over
        self._held = b""
        # The submission lines and the hint (bounded): the id and messages are read in them.
        self._said = b""

    def lines(self, data: bytes) -> bytes:
        """Whole lines in; what of them belongs to the log out."""
        out = bytearray()
        for line in _lines_of(data):
            if self.ended or not self.log_started:
                self._keep(line)
                self.log_started = self.log_started or _matches(_LAUNCHING, line)
                continue
            if self._held:
                if _plain(line) == _HINT:
                    self.ended = True
                    self._keep(self._held + line)
                    self._held = b""
                    continue
                out += self._held
                self._held = b""
            if line == b"\n":
                self._held = line
            else:
                out += line
        return bytes(out)

    def piece(self, data: bytes) -> bytes:
        """The start of a line longer than is held: the log's, once it began."""
        if self.ended or not self.log_started:
            self._keep(data)
            return b""
        held, self._held = self._held, b""
        return held + data

    def finish(self) -> bytes:
        """The stream ended (not dropped): a held blank line was the log's."""
        held, self._held = self._held, b""
        return held

    @property
    def said(self) -> str:
        return self._said.decode(errors="replace")

    def _keep(self, data: bytes) -> None:
        self._said = (self._said + data)[-_KEPT_OUTPUT_BYTES:]


def _lines_of(data: bytes) -> list[bytes]:
    """Lines ending in a newline (a carriage return alone ends none, as for the log)."""
    return [line + b"\n" for line in data.split(b"\n")[:-1]]


def _plain(line: bytes) -> str:
    return ANSI.sub("", line.decode(errors="replace")).strip()


def _matches(pattern: re.Pattern[str], line: bytes) -> bool:
    return pattern.match(_plain(line)) is not None


async def find_launched(
    sky: SkyCli, environment: Mapping[str, str], state: Mapping[str, object]
) -> int:
    """The managed job a launch whose id was not seen submitted (its stream broke, or the
    daemon stopped, before SkyPilot printed the id): one `sky jobs queue -o json`, the one
    job of this name submitted between the launch's start and its log's. LookupError if
    there is not exactly one."""
    since, until = state.get(LAUNCHED_AT), state.get(LOG_STARTED_AT)
    if not isinstance(since, (int, float)) or not isinstance(until, (int, float)):
        raise LookupError("whether SkyPilot took the job is unknown (see `sky jobs queue`)")
    result = await sky.run(
        sky.queue_argv(), environment, timeout=_QUEUE_TIMEOUT, kept=_QUEUE_OUTPUT_BYTES
    )
    if result.exit_code != 0:
        raise LookupError(f"sky jobs queue failed: {message_of(result) or result.exit_code}")
    try:
        rows = json.loads(result.stdout)
    except ValueError:
        raise LookupError("sky jobs queue -o json printed no JSON") from None
    name = state.get(SKY_NAME) or None
    low, high = since - _SUBMITTED_SLACK, until + _SUBMITTED_SLACK
    found: set[int] = {
        row["job_id"]
        for row in (rows if isinstance(rows, list) else [])
        if _submitted_while(row, name, low, high)
    }
    if len(found) != 1:
        raise LookupError(
            f"{len(found)} managed jobs named {name!r} were submitted while ours was: "
            "cannot tell which is ours (see `sky jobs queue`)"
        )
    return found.pop()


def _submitted_while(row: object, name: object, low: float, high: float) -> bool:
    """A `sky jobs queue -o json` row of a job named `name` submitted between low and high."""
    if not isinstance(row, dict) or not isinstance(row.get("job_id"), int):
        return False
    submitted = row.get("submitted_at")
    if name is not None and row.get("job_name") != name:
        return False
    return isinstance(submitted, (int, float)) and low <= submitted <= high


def managed_job_ids(stdout: str) -> list[int]:
    """The managed job ids `sky jobs launch` printed; the last match counts (the job's own
    output could hold the text before it, without -d)."""
    found: list[int] = []
    for raw in ANSI.sub("", stdout).splitlines():
        line = raw.strip()
        if match := _MANAGED_JOB_ID.match(line):
            found = [int(match.group(1))]
        elif match := _JOBS_SUBMITTED.match(line):
            found = _expand_ids(match.group(1))
    return found


def _expand_ids(text: str) -> list[int]:
    """`4,5,6` or, defensively, `1-3,5`: a range gives its ends only (only the last id is
    used, and `1-99999999999` must not become a list of that many)."""
    ids: list[int] = []
    for raw in text.split(","):
        part = raw.strip()
        if "-" in part:
            first, _, last = part.partition("-")
            ids.extend(sorted({int(first), int(last)}))
        elif part:
            ids.append(int(part))
    return ids


def message_of(result: SkyResult) -> str:
    """SkyPilot's own message, in one line: the last non-empty stderr line, else stdout's."""
    for text in (result.stderr, result.stdout):
        lines = [line.strip() for line in ANSI.sub("", text).splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


async def terminate(process: asyncio.subprocess.Process) -> None:
    """Stops a `sky` process and everything it started (it leads its own process group)."""
    await terminate_group(process, _TERMINATE_GRACE)
