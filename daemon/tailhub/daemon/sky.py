"""The `sky` command line as the daemon uses it: how it is run and how its output is read.

What SkyPilot prints and how it exits is written down in docs/skypilot-contract.md; the
regular expressions and exit codes here follow that document.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tailhub.daemon.config import minimal_environment
from tailhub.daemon.runner import terminate_group

ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MANAGED_JOB_ID = re.compile(r"^Managed Job ID: (\d+)$")
_JOBS_SUBMITTED = re.compile(r"^Jobs submitted with IDs: ([0-9][0-9,\s-]*)\.$")
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
        """`--env KEY` without its value: the value travels in the process's environment
        (`launch_environment`), since any local user can read a command line."""
        argv = [self.path, "jobs", "launch", "-d", "-y"]
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
            stdout[-_KEPT_OUTPUT_BYTES:].decode(errors="replace"),
            stderr[-_KEPT_OUTPUT_BYTES:].decode(errors="replace"),
        )


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
