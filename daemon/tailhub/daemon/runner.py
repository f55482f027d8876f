"""The local runner: starts a task as a detached process that outlives the daemon.

Each job gets a run directory holding its scripts, and later its exit status. The job runs
in its own session (so a signal to its process group reaches everything it started, and
nothing of the daemon's), writes straight to its log file, and records its exit status
itself, so that a daemon started later can tell how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tailhub.daemon.credentials import without_credentials
from tailhub.daemon.domain import LocalSpec
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.statedir import (
    open_private_dir,
    open_state_file,
    read_state_file,
    write_state_file,
)

# The wrapper the job runs as. Setup and run are separate scripts so that a failing setup is
# told apart from a failing run; the status file appears atomically (rename) when done.
#
# Nothing in it is reached by a name someone could re-point: it runs as
# `bash /proc/self/fd/N` (the script the daemon wrote, by descriptor), in the run directory
# the daemon opened (by descriptor, as its working directory), and names that directory's files
# relative to it. It never leaves it: the task's scripts run in a subshell that goes to the
# workdir, and are reached as /proc/$$/cwd/..., this shell's own working directory.
_WRAPPER = """\
#!/usr/bin/env bash
# Written by tailhubd for job {job_id}.
exec {wrapper_fd}<&-
# First, claim this launch: a daemon that died before recording this process either adopts it
# (the claim holds its pid) or takes the claim itself and starts the job again, and then this
# script must not run the task a second time.
# ($$ is this shell's pid in the subshell too; the claim is private like every state file.)
( umask 077; set -C; echo $$ > {claim} ) 2>/dev/null || exit 0
# Cancel signals the whole process group. A trapped (not ignored) SIGTERM leaves this shell
# alive to record how the job's script ended, and is reset to the default in that script.
trap : TERM
# The status appears atomically (rename); on a full disk, where no new file can be written, it
# is written in place into the slot the daemon made before starting the job (its blocks are
# allocated already), so that a job's exit code survives a full disk.
record() {{
  {{ echo "$1 $2" > exit_status.tmp && mv exit_status.tmp exit_status; }} 2>/dev/null ||
    printf '%s %s\\n' "$1" "$2" 1<> exit_status.slot
}}
here=/proc/$$/cwd
if ! ( cd {workdir} ); then
  record setup 1
  exit 1
fi
if [ -s setup.sh ]; then
  ( cd {workdir} && exec bash "$here/setup.sh" )
  code=$?
  if [ "$code" -ne 0 ]; then
    record setup "$code"
    exit "$code"
  fi
fi
( cd {workdir} && exec bash "$here/run.sh" )
code=$?
record run "$code"
exit "$code"
"""
# The slot's size: "setup 255" and a newline fit with room to spare.
_SLOT_BYTES = 64
_SLOT = "exit_status.slot"


# The keys a RunHandle takes in a job's source state.
RUN_HANDLE_KEYS = ("pid", "start_time")


@dataclass(frozen=True)
class RunHandle:
    """Identifies a job's process, also after a daemon restart (pids get reused)."""

    pid: int
    start_time: int

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start_time": self.start_time}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> RunHandle | None:
        pid, start_time = data.get("pid"), data.get("start_time")
        if isinstance(pid, int) and isinstance(start_time, int):
            return cls(pid, start_time)
        return None

    @classmethod
    def of(cls, pid: int) -> RunHandle:
        """The handle of a process running now."""
        return cls(pid, _start_time(pid) or 0)


@dataclass(frozen=True)
class ExitStatus:
    phase: str  # "setup" or "run"
    code: int


class LocalRunner:
    def __init__(
        self,
        paths: StatePaths,
        fallback_environment: tuple[tuple[str, str], ...] = (),
        umask: int = 0o022,
    ) -> None:
        self._paths = paths
        # For a job whose client sent no environment: never the daemon's own.
        self._fallback_environment = without_credentials(fallback_environment)
        self._umask = umask

    def start(self, job_id: int, spec: LocalSpec, attempt: int = 1) -> RunHandle:
        run_dir = self._paths.run_dir(job_id)
        run_fd = self._open_run_dir(job_id, create=True)
        try:
            write_state_file(run_dir / "setup.sh", spec.setup, dir_fd=run_fd)
            write_state_file(run_dir / "run.sh", spec.run, dir_fd=run_fd)
            write_state_file(run_dir / _SLOT, " " * (_SLOT_BYTES - 1) + "\n", dir_fd=run_fd)
            # The wrapper names its own descriptor to close it: written after the number is
            # known, into the file that descriptor holds.
            wrapper_fd = open_state_file(run_dir / "job.sh", os.O_RDWR | os.O_TRUNC, dir_fd=run_fd)
        except BaseException:
            os.close(run_fd)
            raise
        try:
            wrapper = _WRAPPER.format(
                job_id=job_id,
                wrapper_fd=wrapper_fd,
                workdir=shlex.quote(spec.workdir or os.path.expanduser("~")),
                claim=shlex.quote(_claim_name(attempt)),
            )
            os.write(wrapper_fd, wrapper.encode())
            base = without_credentials(spec.environment) or self._fallback_environment
            environment = {**base, **dict(spec.envs), "TAILHUB_JOB_ID": str(job_id)}
            log_fd = open_state_file(self._paths.job_log(job_id), os.O_WRONLY | os.O_APPEND)
            try:
                # /proc/self in the child, where both descriptors are still open when it
                # changes directory and when bash opens its script: the directory and the file
                # the daemon opened and checked, whatever their names lead to by now.
                process = subprocess.Popen(
                    ["bash", f"/proc/self/fd/{wrapper_fd}"],
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    cwd=f"/proc/self/fd/{run_fd}",
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(wrapper_fd,),
                    umask=self._umask,
                )
            finally:
                os.close(log_fd)
        finally:
            os.close(wrapper_fd)
            os.close(run_fd)
        return RunHandle(process.pid, _start_time(process.pid) or 0)

    def claim(self, job_id: int, attempt: int) -> int | None:
        """The pid that claimed launch `attempt` of the job; None if the daemon now holds it.

        Taking the claim (O_EXCL) is what makes a process of that attempt that has not
        claimed it yet exit without running the task.
        """
        try:
            run_fd = self._open_run_dir(job_id, create=False)
        except FileNotFoundError:  # no run directory: nothing was started
            return None
        try:
            name = _claim_name(attempt)
            try:
                fd = os.open(
                    name,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=run_fd,
                )
            except FileExistsError:
                return _claimant(self._paths.run_dir(job_id) / name, run_fd)
            try:
                os.write(fd, b"daemon\n")
            finally:
                os.close(fd)
            return None
        finally:
            os.close(run_fd)

    def is_running(self, handle: RunHandle) -> bool:
        start_time = _start_time(handle.pid)
        return start_time is not None and start_time == handle.start_time

    async def wait_for_exit(self, handle: RunHandle) -> None:
        """Returns when the process has exited; works for processes this daemon did not start."""
        if not self.is_running(handle):
            return
        try:
            pidfd = os.pidfd_open(handle.pid)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, on_exit)
        try:
            if self.is_running(handle):  # it may have exited before the pidfd was opened
                await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        # Reap it if it is our child; WNOHANG never blocks, and it has exited already.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(handle.pid, os.WNOHANG)  # noqa: ASYNC222

    def exit_status(self, job_id: int) -> ExitStatus | None:
        """How the job's script ended, from its status file or, on a full disk, its slot."""
        run_dir = self._paths.run_dir(job_id)
        try:
            run_fd = self._open_run_dir(job_id, create=False)
        except OSError:  # none (a job that never started), or planted (refused as untrusted)
            return None
        try:
            for name in ("exit_status", _SLOT):
                try:
                    phase, code = read_state_file(run_dir / name, dir_fd=run_fd).split()[:2]
                    if phase in ("setup", "run"):
                        return ExitStatus(phase, int(code))
                except (OSError, ValueError):  # none yet, or planted (refused as untrusted)
                    continue
            return None
        finally:
            os.close(run_fd)

    def signal(self, handle: RunHandle, signum: signal.Signals) -> None:
        """Signals the job's whole process group (it leads its own session)."""
        if self.is_running(handle):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(handle.pid, signum)

    def _open_run_dir(self, job_id: int, *, create: bool) -> int:
        """The job's run directory, opened: `runs` in the home, then the job's in it, each a
        private directory of ours and never a symlink (the wrapper runs in this one)."""
        runs_fd = open_private_dir(self._paths.runs, create=create)
        try:
            return open_private_dir(self._paths.run_dir(job_id), dir_fd=runs_fd, create=create)
        finally:
            os.close(runs_fd)


def _claim_name(attempt: int) -> str:
    return f"pid.{attempt}"


def _claimant(path: Path, run_fd: int) -> int | None:
    """The pid in a claim file; the shell writes it right after creating the file."""
    for _ in range(100):
        # Checked like every state file: never through a planted link, never blocking on a FIFO.
        text = read_state_file(path, dir_fd=run_fd).strip()
        if text:
            return int(text) if text.isdigit() else None
        time.sleep(0.01)  # created, not yet written: a moment at most
    return None


async def terminate_group(process: asyncio.subprocess.Process, grace: float) -> None:
    """Stops a process that leads its own process group, and everything it started:
    SIGTERM, then SIGKILL after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] == "Z":  # exited, waiting to be reaped
        return None
    return int(fields[19])
