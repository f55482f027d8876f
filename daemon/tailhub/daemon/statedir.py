"""Trust in the state directory, like ssh's StrictModes, and opening its files safely.

Whoever can write the state directory (or a directory above it) can plant a database that
runs their command as the daemon's user, or a symlink that makes the daemon write where it
should not. So a directory someone else can write is refused, and state files are never
opened through a symlink, a hard link or anything but a regular file. Shared by the daemon
and the client: both refuse before they use anything in the directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import stat
from pathlib import Path


class UntrustedState(OSError):
    """A state directory or file that someone else could have planted or can change."""

    def __init__(self, message: str) -> None:
        # One argument: str(error) is the message itself, as the CLI and daemon print it.
        super().__init__(message)


def check_state_dir(home: Path) -> None:
    """Refuses `home` when it, or a directory above it up to the user's home or `/`, is not
    owned by the user (or root), or is group/world-writable (a parent with the sticky bit, like
    /tmp, may be). Parts that do not exist yet are skipped: they will be created private."""
    try:
        user_home = Path.home()
    except (RuntimeError, KeyError):  # no $HOME and no passwd entry: check up to `/`
        user_home = Path("/")
    home = Path(os.path.abspath(home))
    # The path as written and the real one: a symlinked state directory is only as safe as
    # the directories holding the link and those holding its target.
    for chain_start, stop_at in (
        (home, user_home),
        (Path(os.path.realpath(home)), Path(os.path.realpath(user_home))),
    ):
        for directory in _up_to(chain_start, stop_at):
            _check_dir(directory, home, is_state_dir=directory == chain_start)


def _up_to(start: Path, stop_at: Path) -> list[Path]:
    """`start` and its parents, ending at `stop_at` when it lies above `start`, else at `/`."""
    chain = [start]
    if start == stop_at:
        return chain
    for parent in start.parents:
        chain.append(parent)
        if parent == stop_at:
            break
    return chain


def _check_dir(directory: Path, home: Path, *, is_state_dir: bool) -> None:
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return
    where = f"refusing state directory {home}: {directory}"
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedState(f"{where} is not a directory")
    _check_owner(info, where, directory)
    writable_by_others = info.st_mode & 0o022
    sticky = info.st_mode & stat.S_ISVTX
    if writable_by_others and (is_state_dir or not sticky):
        raise UntrustedState(
            f"{where} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"fix: chmod go-w {shlex.quote(str(directory))}"
        )


def _check_owner(info: os.stat_result, where: str, path: Path) -> None:
    user = os.geteuid()
    if info.st_uid not in (user, 0):
        raise UntrustedState(
            f"{where} is owned by uid {info.st_uid}, not by you (uid {user}) or root; "
            f"fix: chown {user} {shlex.quote(str(path))}, or use another --home"
        )


def ensure_private_dir(path: Path) -> None:
    """Creates a directory of the state directory (0700), or checks the one there is: a real
    directory (not a symlink) that is ours and that nobody else can write."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UntrustedState(
                f"refusing {path}: it is not a directory (a symlink?); move it aside"
            ) from None
        raise
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    _check_owner(info, f"refusing {path}: it", path)
    fault = open_to_others(info, path)
    if fault is not None:
        raise UntrustedState(f"refusing {path}: {fault}")


def open_to_others(info: os.stat_result, path: Path, *, secret: bool = False) -> str | None:
    """Why a file with this mode must not be trusted, and the fix; None when it may.

    Others must not be able to write it (they would steer the daemon), nor, when it is
    `secret`, read it."""
    mode = stat.S_IMODE(info.st_mode)
    quoted = shlex.quote(str(path))
    if secret and mode & 0o077:
        return f"others can read it (mode {mode:04o}); fix: chmod 600 {quoted}"
    if mode & 0o022:
        return f"it is writable by others (mode {mode:04o}); fix: chmod go-w {quoted}"
    return None


def open_state_file(path: Path, flags: int, *, create: bool = True) -> int:
    """Opens a file of the state directory and returns its descriptor.

    Never through a symlink; created exclusively (0600) when new; refused unless it is a
    regular file of ours with one link (a hard link would let it stand for another file).
    O_TRUNC is applied only after those checks.
    """
    truncate = flags & os.O_TRUNC
    # O_NONBLOCK: opening a planted FIFO must fail or return at once, never wait for a peer.
    base = (flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL)) | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = -1
    if create:
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, base | os.O_CREAT | os.O_EXCL, 0o600)
    if fd < 0:
        try:
            fd = os.open(path, base | os.O_NONBLOCK)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UntrustedState(
                    f"refusing {path}: it is a symbolic link, not a file tailhub made; "
                    "move it aside"
                ) from None
            if error.errno in (errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
                raise _not_regular(path) from None
            raise
        try:
            _check_file(fd, path)
            if not flags & os.O_NONBLOCK:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            if truncate:
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _check_file(fd: int, path: Path) -> None:
    _check_regular(os.fstat(fd), path)


def _check_regular(info: os.stat_result, path: Path) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(path)
    _check_owner(info, f"refusing {path}: it", path)
    if info.st_nlink != 1:
        raise UntrustedState(
            f"refusing {path}: it has {info.st_nlink} hard links, not 1; move it aside"
        )


def _not_regular(path: Path) -> UntrustedState:
    return UntrustedState(f"refusing {path}: it is not a regular file; move it aside")


def check_state_file(path: Path) -> None:
    """Refuses a file that exists at `path` and is not a regular file of ours (a symlink, a
    FIFO...): for files opened by others (SQLite) after this check."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise UntrustedState(
            f"refusing {path}: it is a symbolic link, not a file tailhub made; move it aside"
        )
    _check_regular(info, path)


def write_state_file(path: Path, text: str) -> None:
    """Replaces the content of a state file (see `open_state_file`)."""
    fd = open_state_file(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def read_state_file(path: Path) -> str:
    """The text of a state file; FileNotFoundError when there is none."""
    fd = open_state_file(path, os.O_RDONLY, create=False)
    with os.fdopen(fd, errors="replace") as file:
        return file.read()


def check_socket(socket_path: Path) -> None:
    """Refuses a socket (or its directory) that is not the user's or root's: the daemon behind
    it would receive the user's tasks and secrets and could fake their output."""
    for path in (socket_path.parent, socket_path):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        what = "the daemon's socket" if path == socket_path else "the socket's directory"
        if path == socket_path and not stat.S_ISSOCK(info.st_mode):
            raise UntrustedState(f"refusing {path}: {what} is not a socket; move it aside")
        _check_owner(info, f"refusing {path}: {what}", path)


def check_database(path: Path) -> None:
    """Refuses a database (or its -wal, -shm or -journal file) that is a symlink or not a
    regular file of ours: SQLite would follow it. What SQLite creates, it creates in the
    checked private directory under the daemon's umask 077."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        check_state_file(path.with_name(path.name + suffix))
