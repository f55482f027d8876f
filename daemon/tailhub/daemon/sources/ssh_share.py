"""One ssh connection per log host for command jobs that are `ssh ... HOST COMMAND`.

K command jobs on one host cost K ssh connections: K key exchanges and authentications, on
this machine and on the host (0.15 s of CPU for the client and 0.05 s for sshd each, measured
with bench/sshd.py), and K connections for the host's sshd to accept (MaxStartups drops a
burst). OpenSSH can share one: the first job's ssh starts a master connection in the
background (ControlMaster, ControlPersist), and every job's ssh to the same user, host and
port runs its command as one more session of it (about a tenth of the CPU).

`SshShare.argv` makes a command whose program is `ssh` a session of its destination's master,
unless the command already says anything about connection sharing (`-S`, `-M`, `-o
Control...`: `-o ControlMaster=no` turns it off for one job) or has options a master must not
take from it (forwardings `-L -R -D -W`, `-f`, `-N`, `-O`, `-s`, `-G`). The daemon starts each
master itself (`ssh -M -N` with the command's options and destination, in a session of its
own, so that stopping a job's process group never takes the others' connection with it) and
the jobs to that destination wait for it, up to `_MASTER_WAIT_S`; a master that cannot connect
leaves each command to connect alone, as before. The masters' sockets are in the daemon's own
directory (0700), named by destination (its options and host, hashed) and number: a master
carries `SESSIONS_PER_MASTER` sessions at most (sshd refuses past its MaxSessions, 10 by
default), so a destination with more jobs gets more masters. `close_masters` ends them when the
daemon stops. A path too long for a Unix socket turns sharing off.

Only a daemon alone shares (server.py): a cluster node's commands run behind its fence, which
must be able to kill all of a job's upstream, and a master serves several jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

# How long a master outlives its last session (seconds): the next job to the host reuses it.
CONTROL_PERSIST_S = 60
# How long jobs to a destination wait for the master the first one starts.
_MASTER_WAIT_S = 5.0
# A Unix socket's path holds at most 107 bytes; ssh makes the master's at PATH plus a dot and
# 16 random characters, then renames it.
_MAX_SOCKET_PATH = 107
_NAME_LENGTH = 24 + 4  # the destination's hash, "-" and the master's number
# Sessions one master carries at once: below sshd's default MaxSessions (10), past which it
# refuses one more (the command then connects alone). A destination with more jobs gets more
# masters.
SESSIONS_PER_MASTER = 8
_TEMPORARY_SUFFIX = 17
# ssh's options that take a value (its getopt string); the flags of a command left alone: those
# that say something about sharing, and those a master must not take from it (forwardings,
# going to the background, no command, a control command, a subsystem, printing the config);
# and the `-o` options that say something about sharing.
_WITH_VALUE = frozenset("bcDEeFIiJLlmOoPpQRSWw")
_LEFT_ALONE = frozenset("MS") | frozenset("LRDWfNOsG")
_SHARING_OPTIONS = ("controlmaster", "controlpath", "controlpersist")


def fits(directory: Path) -> bool:
    """Whether masters' sockets in `directory` fit in a Unix socket's path."""
    length = len(os.fsencode(directory)) + 1 + _NAME_LENGTH + _TEMPORARY_SUFFIX
    return length <= _MAX_SOCKET_PATH


def destination(argv: Sequence[str]) -> list[str] | None:
    """ssh's options and destination in `argv` (what one connection serves), or None when it
    is not an ssh command that may share: another program, no destination, one that says
    something of sharing itself, or one with options its master must not take (`-L`, `-f`...)."""
    if not argv or os.path.basename(argv[0]) != "ssh":
        return None
    index = 1
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("-") or word == "-":
            break
        letters = word[1:]
        for position, letter in enumerate(letters):
            if letter in _LEFT_ALONE:
                return None
            if letter in _WITH_VALUE:
                value = letters[position + 1 :]
                if not value:
                    index += 1
                    value = argv[index] if index < len(argv) else ""
                if letter == "o" and value.strip().lower().startswith(_SHARING_OPTIONS):
                    return None
                break
        index += 1
    if index >= len(argv):
        return None
    return list(argv[: index + 1])


class SshShare:
    """The daemon's shared ssh connections: where their sockets are, and the masters being
    started."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._starting: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Per destination, the sessions each of its masters carries now.
        self._sessions: dict[str, list[int]] = {}

    async def session(self, argv: Sequence[str]) -> tuple[list[str], Callable[[], None]]:
        """`argv` as a session of one of its destination's master connections (started first
        when there is none; a command whose master could not start connects on its own), and
        what to call once the command has ended."""
        connection = destination(argv)
        if connection is None:
            return list(argv), no_session
        key = hashlib.sha256("\0".join(connection).encode()).hexdigest()[:24]
        counts = self._sessions.setdefault(key, [])
        number = next((n for n, count in enumerate(counts) if count < SESSIONS_PER_MASTER), None)
        if number is None:
            number = len(counts)
            counts.append(0)
        counts[number] += 1
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                counts[number] -= 1

        try:
            return await self._argv(argv, connection, f"{key}-{number}"), end
        except BaseException:
            end()
            raise

    async def _argv(self, argv: Sequence[str], connection: list[str], name: str) -> list[str]:
        path = self.directory / name
        starting = self._starting.get(name)
        if starting is None and not _listening(path):
            starting = self._starting[name] = asyncio.Event()
            task = asyncio.get_running_loop().create_task(
                self._start_master(name, path, connection, starting)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if starting is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(starting.wait(), _MASTER_WAIT_S)
        # ControlMaster=no: a session of the master when it listens, else a connection alone.
        return [argv[0], "-o", "ControlMaster=no", "-o", f"ControlPath={path}", *argv[1:]]

    async def _start_master(
        self, name: str, path: Path, connection: list[str], started: asyncio.Event
    ) -> None:
        """`ssh -M -N` to the destination, in a session of its own (no job's process group):
        with ControlPersist it goes to the background once connected, and this process ends."""
        try:
            _forget(path)  # (a master that died: its socket left behind)
            master = await asyncio.create_subprocess_exec(
                connection[0],
                *("-M", "-N", "-o", f"ControlPath={path}"),
                *("-o", f"ControlPersist={CONTROL_PERSIST_S}"),
                *connection[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                await asyncio.wait_for(master.wait(), _MASTER_WAIT_S)
            except TimeoutError:  # not connected in time: the commands connect alone
                master.kill()
                await master.wait()
        except OSError as error:
            logger.info("ssh: no shared connection for %s: %s", connection[-1], error)
        finally:
            started.set()
            del self._starting[name]


def no_session() -> None:
    """What ends a command that holds no session of a shared connection: nothing."""


def _forget(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _listening(path: Path) -> bool:
    """Whether a master answers on `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(os.fspath(path))
    except OSError:
        return False
    return True


def close_masters(directory: Path) -> None:
    """Ends every master whose socket is in `directory` (`ssh -O exit`); blocking, a second
    at most each."""
    with contextlib.suppress(FileNotFoundError):
        for socket_path in directory.iterdir():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "tailhub-master"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=1.0,
                    check=False,
                )
