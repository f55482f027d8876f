"""Finding, starting and stopping the daemon of a state directory from the client side.

Many CLIs may find no daemon at the same moment. They queue on an auto-start lock; the first
starts the daemon, the others find it answering. The daemon's own lock makes a second daemon
impossible even without this, but the queue saves starting processes only to see them quit.

Only a daemon of the home's own kind is started (home_kind.py): on a cluster node's state
directory a CLI never starts one (a daemon alone there would run the cluster's jobs outside
any lease); it waits for the node to come back, as a follower does across a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from tailhub.client import exit_codes
from tailhub.client._errors import DaemonUnreachable, TailhubError
from tailhub.daemon.home_kind import HomeKind, recorded_kind
from tailhub.daemon.lock import is_held, read_pid
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.statedir import open_home, open_state_file, read_state_file

START_TIMEOUT = 20.0
# How long a CLI waits for a cluster node's daemon to come back (its service manager restarts
# it) before it gives up: the reconnect window of a follower.
NODE_WAIT_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
_PROBE_INTERVAL = 0.02


def is_listening(paths: StatePaths) -> bool:
    """True when something accepts connections on the daemon's socket (a cheap check)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fspath(paths.socket))
    except OSError:
        return False
    finally:
        probe.close()
    return True


class OtherKindOfDaemon(TailhubError):
    """`daemon start` would start a daemon of another kind than the home's (a usage error)."""

    exit_code = exit_codes.USAGE


def ensure_daemon(
    paths: StatePaths,
    daemon_args: Sequence[str] = (),
    *,
    as_node: bool | None = False,
    explicit: bool = False,
    on_wait: Callable[[str], None] | None = None,
    environment: Mapping[str, str] | None = None,
) -> bool:
    """Makes sure a daemon serves `paths`; True if this call started it.

    `as_node`: whether the daemon it would start joins a cluster (None: it cannot tell, a
    --config file decides). On a cluster node's home an autostart waits for the node instead
    (`on_wait` is told why, once); an `explicit` start of a daemon alone is refused
    (OtherKindOfDaemon). The daemon gets `environment` (default: this process's)."""
    if is_listening(paths):
        return False
    try:
        paths.check_socket_path()
    except ValueError as error:
        raise TailhubError(str(error)) from None
    if explicit and as_node is False:
        check_same_kind(paths)
    kind = recorded_kind(paths)
    if not explicit and kind is not None and kind.is_node:
        _wait_for_node(paths, kind, on_wait)
        return False
    # Made (private) the way it is checked: one component at a time, never through a link
    # someone else owns. Its path is used afterwards (the lock, the log, the daemon's working
    # directory): after that check only the user or root can change where it leads. The
    # daemon checks it again itself before it touches anything.
    os.close(_opened_home(paths))
    with _autostart_lock(paths):
        if is_listening(paths):
            return False
        process = None if is_held(paths.lock) else _spawn(paths, daemon_args, environment)
        _wait_until_listening(paths, process)
        return process is not None


def stop_daemon(paths: StatePaths, timeout: float = STOP_TIMEOUT) -> int | None:
    """Sends SIGTERM and waits for the daemon to exit; returns its pid, None if none ran."""
    pid_text = read_pid(paths.pid)
    if not pid_text or not is_held(paths.lock):
        return None
    pid = int(pid_text)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    # The lock goes before the process does: wait for both, so that "stopped" means gone.
    while is_held(paths.lock) or _is_running(pid):
        if time.monotonic() > deadline:
            raise TailhubError(
                f"tailhubd (pid {pid}) did not stop within {timeout:.0f}s; "
                f"`kill -9 {pid}` forces it (running local jobs are not affected)"
            )
        time.sleep(_PROBE_INTERVAL)
    return pid


def _is_running(pid: int) -> bool:
    """True while `pid` is a process that has not exited (a zombie has: only its parent has
    yet to collect it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # it exists, and is someone else's
            pass
        return True
    # The state follows the command name, which is in parentheses and may hold any byte.
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X")


def _opened_home(paths: StatePaths) -> int:
    fd = open_home(paths.home, create=True)
    assert fd is not None  # created when missing
    return fd


@contextlib.contextmanager
def _autostart_lock(paths: StatePaths) -> Iterator[None]:
    fd = open_state_file(paths.home / "autostart.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class OptionsRefused(TailhubError):
    """`tailhubd --check` refused the options: its line, and its exit status."""

    def __init__(self, line: str, status: int) -> None:
        super().__init__(line)
        self.line = line
        self.exit_code = exit_codes.USAGE if status == exit_codes.USAGE else exit_codes.ERROR


def check_options(paths: StatePaths, daemon_args: Sequence[str]) -> None:
    """Runs `tailhubd --check` with `daemon_args` as a start would run tailhubd (same
    interpreter, directory and environment): OptionsRefused when a start would fail before
    binding anything (bad flags, --config file, TLS files)."""
    try:
        done = subprocess.run(
            [*_daemon_argv(paths), "--check", *daemon_args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=paths.home if paths.home.is_dir() else None,
            timeout=START_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TailhubError(f"tailhubd --check did not answer within {START_TIMEOUT:.0f}s") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        said = lines[-1] if lines else f"tailhubd --check exited with {done.returncode}"
        raise OptionsRefused(said, done.returncode)


def _daemon_argv(paths: StatePaths) -> list[str]:
    # -I and the state directory as working directory: nothing of the caller's directory
    # (a click.py lying there) or of its PYTHON* variables gets imported into the daemon.
    return [sys.executable, "-I", "-m", "tailhub.daemon", "--home", os.fspath(paths.home)]


def _spawn(
    paths: StatePaths, daemon_args: Sequence[str], environment: Mapping[str, str] | None
) -> subprocess.Popen[bytes]:
    log_fd = open_state_file(paths.daemon_log, os.O_WRONLY | os.O_APPEND)
    try:
        return subprocess.Popen(
            [*_daemon_argv(paths), *daemon_args],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            cwd=paths.home,
            env=environment,
            start_new_session=True,  # outlives this CLI and its terminal
            close_fds=True,
        )
    finally:
        os.close(log_fd)


def check_same_kind(paths: StatePaths) -> None:
    """OtherKindOfDaemon when `paths` is a cluster node's home (a daemon alone is asked for)."""
    kind = recorded_kind(paths)
    if kind is not None and kind.is_node:
        raise OtherKindOfDaemon(
            f"{paths.home} is the state directory of {kind.describe()}: a daemon alone there "
            f"would run the cluster's jobs outside any lease; start the node: "
            f"{kind.start_hint(paths)}"
        )


def _wait_for_node(
    paths: StatePaths, kind: HomeKind, on_wait: Callable[[str], None] | None
) -> None:
    """Waits for a cluster node's own daemon to listen again; never starts one."""
    if on_wait is not None:
        on_wait(
            f"waiting for {kind.describe()} to come back on {paths.socket} (a cluster node's "
            "daemon is never started by the CLI: its service manager restarts it)"
        )
    deadline = time.monotonic() + NODE_WAIT_TIMEOUT
    while not is_listening(paths):
        if time.monotonic() > deadline:
            raise DaemonUnreachable(
                f"{kind.describe()} did not come back on {paths.socket} within "
                f"{NODE_WAIT_TIMEOUT:.0f}s; start it: {kind.start_hint(paths)}"
            )
        time.sleep(_PROBE_INTERVAL)


def _wait_until_listening(paths: StatePaths, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not is_listening(paths):
        if process is not None and process.poll() is not None and not is_held(paths.lock):
            raise DaemonUnreachable(
                f"tailhubd exited with {process.returncode} while starting; "
                f"see {paths.daemon_log}: {_last_line(paths)}"
            )
        if time.monotonic() > deadline:
            raise DaemonUnreachable(
                f"tailhubd did not start listening on {paths.socket} within "
                f"{START_TIMEOUT:.0f}s; see {paths.daemon_log}"
            )
        time.sleep(_PROBE_INTERVAL)


def _last_line(paths: StatePaths) -> str:
    try:
        lines = read_state_file(paths.daemon_log).strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
