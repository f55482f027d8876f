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

from tailhub.daemon.errors import UntrustedState
from tailhub.daemon.paths import shown


def check_state_dir(home: Path) -> None:
    """Refuses `home` when a component of its path is untrusted (see `open_home`); parts that
    do not exist yet are skipped: they will be created private."""
    fd = open_home(home, create=False)
    if fd is not None:
        os.close(fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's ELOOP limit


def open_home(home: Path, *, create: bool) -> int | None:
    """Resolves the state directory once, checking each component of its path, and opens it.

    Like ssh's StrictModes, with symlinks counted by their owner: the walk starts at `/` and
    opens one name at a time relative to the directory before it (O_NOFOLLOW), so what is
    checked is what gets opened, and nobody can swap a name between the check and the use:
    - every directory on the way must be owned by the user or root and writable by nobody else
      (above the state directory a sticky one, like /tmp, may be: others cannot rename what is
      in it); directories above the user's own home are not checked, as ssh does not (the
      user cannot fix them);
    - every symlink on the way must be owned by the user or root (whoever owns a link can
      point it anywhere at any time); it is followed by reading it and walking its target the
      same way.
    Returns the directory's descriptor (close-on-exec). Missing directories are created 0700
    when `create`; otherwise None is returned for a home that does not exist yet.
    UntrustedState names the first component refused.
    """
    home = Path(home).absolute()
    skipped = _above_user_home()
    todo = _components(os.fspath(home))
    stack = [(os.open("/", _DIR_FLAGS), "/")]
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            parent_fd, parent = stack[-1]
            if parent not in skipped:
                _check_dir(os.fstat(parent_fd), parent, home, is_state_dir=False)
            path = os.path.join(parent, name)
            info = _look_up(name, parent_fd, create=create)
            if info is None:
                return None
            if stat.S_ISLNK(info.st_mode):
                _check_link(info, path, home)
                links += 1
                if links > _MAX_LINKS:
                    raise UntrustedState(
                        f"refusing state directory {home}: too many symbolic links at {path}"
                    )
                target = os.readlink(name, dir_fd=parent_fd)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop()[0])
                todo[:0] = _components(target)
                continue
            stack.append((_open_dir(name, parent_fd, path, home), path))
        fd, path = stack.pop()
        try:
            _check_dir(os.fstat(fd), path, home, is_state_dir=True)
        except BaseException:
            os.close(fd)
            raise
        return fd
    finally:
        for fd, _ in stack:
            os.close(fd)


def _look_up(name: str, parent_fd: int, *, create: bool) -> os.stat_result | None:
    """What `name` is in the directory (a link is not followed); a missing one is made a
    private directory when `create`, else None."""
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        if not create:
            return None
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _above_user_home() -> frozenset[str]:
    """The directories strictly above the user's real home (or none, without a home)."""
    try:
        user_home = Path(os.path.realpath(Path.home()))
    except (RuntimeError, KeyError):  # no $HOME and no passwd entry: check up to `/`
        return frozenset()
    return frozenset(os.fspath(parent) for parent in user_home.parents)


def _open_dir(name: str, parent_fd: int, path: str, home: Path) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as error:
        if error.errno in (errno.ENOTDIR, errno.ELOOP):
            # ELOOP: a directory when looked at, a symlink when opened: someone swapped it.
            raise UntrustedState(
                f"refusing state directory {home}: {path} is not a directory"
            ) from None
        raise


def _check_link(info: os.stat_result, path: str, home: Path) -> None:
    """A symlink on the way to the state directory: only as safe as its owner."""
    user = os.geteuid()
    if info.st_uid not in (user, 0):
        raise UntrustedState(
            f"refusing state directory {home}: {path} is a symbolic link owned by uid "
            f"{info.st_uid}, not by you (uid {user}) or root: its owner can point it "
            f"elsewhere at any time; give the directory it leads to, or use another --home"
        )


def _check_dir(info: os.stat_result, directory: str, home: Path, *, is_state_dir: bool) -> None:
    where = f"refusing state directory {home}: {directory}"
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedState(f"{where} is not a directory")
    _check_owner(info, where, Path(directory))
    writable_by_others = info.st_mode & 0o022
    sticky = info.st_mode & stat.S_ISVTX
    if writable_by_others and (is_state_dir or not sticky):
        raise UntrustedState(
            f"{where} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"fix: chmod go-w {shlex.quote(directory)}"
        )


def _check_owner(info: os.stat_result, where: str, path: Path) -> None:
    user = os.geteuid()
    if info.st_uid not in (user, 0):
        raise UntrustedState(
            f"{where} is owned by uid {info.st_uid}, not by you (uid {user}) or root; "
            f"fix: chown {user} {shlex.quote(shown(path))}, or use another --home"
        )


def ensure_private_dir(path: Path) -> None:
    """Creates a directory of the state directory (0700), or checks the one there is: a real
    directory (not a symlink) that is ours and that nobody else can write."""
    os.close(open_private_dir(path))


def open_private_dir(path: Path, *, dir_fd: int | None = None, create: bool = True) -> int:
    """`ensure_private_dir`, returning the directory opened (close-on-exec); without `create`,
    FileNotFoundError when there is none. With `dir_fd`, `path` names it for messages and
    its last component is looked up in `dir_fd`."""
    name: str | Path = path if dir_fd is None else path.name
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=dir_fd)
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UntrustedState(
                f"refusing {shown(path)}: it is not a directory (a symlink?); move it aside"
            ) from None
        raise
    try:
        info = os.fstat(fd)
        _check_owner(info, f"refusing {shown(path)}: it", path)
        fault = open_to_others(info, path)
        if fault is not None:
            raise UntrustedState(f"refusing {shown(path)}: {fault}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_to_others(info: os.stat_result, path: Path, *, secret: bool = False) -> str | None:
    """Why a file with this mode must not be trusted, and the fix; None when it may.

    Others must not be able to write it (they would steer the daemon), nor, when it is
    `secret`, read it."""
    mode = stat.S_IMODE(info.st_mode)
    quoted = shlex.quote(shown(path))
    if secret and mode & 0o077:
        return f"others can read it (mode {mode:04o}); fix: chmod 600 {quoted}"
    if mode & 0o022:
        return f"it is writable by others (mode {mode:04o}); fix: chmod go-w {quoted}"
    return None


def open_state_file(
    path: Path, flags: int, *, create: bool = True, dir_fd: int | None = None
) -> int:
    """Opens a file of the state directory and returns its descriptor.

    Never through a symlink; created exclusively (0600) when new; refused unless it is a
    regular file of ours with one link (a hard link would let it stand for another file).
    O_TRUNC is applied only after those checks. With `dir_fd` (an opened directory), `path`
    names the file for messages and its last component is opened in `dir_fd`.
    """
    name: str | Path = path if dir_fd is None else path.name
    truncate = flags & os.O_TRUNC
    # O_NONBLOCK: opening a planted FIFO must fail or return at once, never wait for a peer.
    base = (flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL)) | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = -1
    if create:
        with contextlib.suppress(FileExistsError):
            fd = os.open(name, base | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
    if fd < 0:
        try:
            fd = os.open(name, base | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UntrustedState(
                    f"refusing {shown(path)}: it is a symbolic link, not a file tailhub made; "
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
    _check_owner(info, f"refusing {shown(path)}: it", path)
    if info.st_nlink != 1:
        raise UntrustedState(
            f"refusing {shown(path)}: it has {info.st_nlink} hard links, not 1; move it aside"
        )


def _not_regular(path: Path) -> UntrustedState:
    return UntrustedState(f"refusing {shown(path)}: it is not a regular file; move it aside")


def check_state_file(path: Path) -> None:
    """Refuses a file that exists at `path` and is not a regular file of ours (a symlink, a
    FIFO...): for files opened by others (SQLite) after this check."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise UntrustedState(
            f"refusing {shown(path)}: it is a symbolic link, not a file tailhub made; move it aside"
        )
    _check_regular(info, path)


def write_state_file(path: Path, text: str, *, dir_fd: int | None = None) -> None:
    """Replaces the content of a state file (see `open_state_file`)."""
    fd = open_state_file(path, os.O_WRONLY | os.O_TRUNC, dir_fd=dir_fd)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def read_state_file(path: Path, *, dir_fd: int | None = None) -> str:
    """The text of a state file; FileNotFoundError when there is none."""
    fd = open_state_file(path, os.O_RDONLY, create=False, dir_fd=dir_fd)
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
