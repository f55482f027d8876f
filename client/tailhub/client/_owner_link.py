"""The CLI's lean link to this machine's daemon: its owner endpoint (daemon owner_http.py), an
HTTP/1.1 subset on the Unix socket `owner.sock` in the home, spoken with the standard library
alone, so that `tailhub jobs logs` never imports grpc, protobuf or click.

Trust is as the gRPC client's (statedir.check_state_dir, check_socket), stricter: the home is
walked from `/` one name at a time (O_NOFOLLOW), every directory on the way must be the user's
or root's and writable by no one else (a sticky one above the home may be), every symbolic
link the user's or root's; the socket must be a socket of the user's or root's. The socket is
reached through the opened home (/proc/self/fd/N/owner.sock): what was checked is what is
connected to. Whatever is not so is `Unusable`, and the full (gRPC) path takes the command
over: it refuses what must be refused, with its own message, or serves what it can.
"""

from __future__ import annotations

import _socket
import os
import stat
import struct

# Not typing's: importing typing (and the re it imports) was a tenth of a follower's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

SOCKET_NAME = "owner.sock"
GRPC_SOCKET_NAME = "sock"  # StatePaths.socket
# A response head, a JSON body, a frame: the daemon's are far smaller (a chunk is at most
# its --max-chunk-bytes, 3 MiB at most).
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_FRAME_BYTES = 16 * 1024 * 1024
# How long a request's answer may take to begin before the full path is tried instead.
ANSWER_TIMEOUT = 30.0
FRAME_HEAD = struct.Struct(">cI")
OFFSET = struct.Struct(">Q")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40


class Unusable(Exception):
    """The lean path cannot serve this: the full path must (nothing was done or printed)."""


class Broken(Exception):
    """A log stream ended before its end frame: the daemon stopped or went away."""


def open_home(home: str) -> int:
    """The state directory, opened after checking every component of its path; Unusable when
    it does not exist or a check fails."""
    todo = _components(home)
    user = os.geteuid()
    stack = [os.open("/", _DIR_FLAGS)]
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            _check_dir(os.fstat(stack[-1]), user, state_dir=False)
            info = os.stat(name, dir_fd=stack[-1], follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if info.st_uid not in (user, 0) or links > _MAX_LINKS:
                    raise Unusable("an untrusted link")
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo[:0] = _components(target)
                continue
            stack.append(os.open(name, _DIR_FLAGS, dir_fd=stack[-1]))
        fd = stack.pop()
        try:
            _check_dir(os.fstat(fd), user, state_dir=True)
        except BaseException:
            os.close(fd)
            raise
        return fd
    except OSError:
        raise Unusable("the home cannot be opened") from None
    finally:
        for fd in stack:
            os.close(fd)


def _check_socket(home_fd: int, name: str, needed: bool) -> None:
    """Unusable unless `name` in the home is a socket of the user's or root's (or, when not
    `needed`, is not there)."""
    try:
        info = os.stat(name, dir_fd=home_fd, follow_symlinks=False)
    except FileNotFoundError:
        if needed:
            raise Unusable("no owner endpoint (no daemon, or one without it)") from None
        return
    except OSError:
        raise Unusable("a socket that cannot be looked at") from None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid not in (os.geteuid(), 0):
        raise Unusable("not a socket of the user's")


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _check_dir(info: os.stat_result, user: int, *, state_dir: bool) -> None:
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (user, 0):
        raise Unusable("not a directory of the user's")
    if info.st_mode & 0o022 and (state_dir or not info.st_mode & stat.S_ISVTX):
        raise Unusable("a directory others can write")


class OwnerLink:
    """The owner endpoint of one opened, checked home."""

    def __init__(self, home_fd: int) -> None:
        self._home_fd = home_fd
        self._path = f"/proc/self/fd/{home_fd}/{SOCKET_NAME}"

    @classmethod
    def open(cls, home: str) -> OwnerLink:
        fd = open_home(home)
        try:
            # The daemon's gRPC socket too, as the gRPC client checks it (statedir.check_socket):
            # one that is not the user's or root's means a daemon that is not theirs.
            for name, needed in ((GRPC_SOCKET_NAME, False), (SOCKET_NAME, True)):
                _check_socket(fd, name, needed)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd)

    def close(self) -> None:
        os.close(self._home_fd)

    def has_file(self, name: str) -> bool:
        """Whether the home holds `name` (a link or anything else counts)."""
        try:
            os.stat(name, dir_fd=self._home_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def connect(self) -> _socket.socket:
        """A connection to the endpoint; Unusable when nothing answers there."""
        # (_socket: socket.py imports selectors and enum, which nothing here needs.)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise Unusable("nothing answers on the owner endpoint") from None
        return sock

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        sock: _socket.socket | None = None,
        timeout: float = ANSWER_TIMEOUT,
    ) -> Response:
        """Sends one request (on `sock`, else a new connection) and reads its answer's head
        (Broken when it has not begun within `timeout` seconds)."""
        sock = sock or self.connect()
        try:
            head = f"{method} {target} HTTP/1.1\r\nHost: tailhub\r\nConnection: close\r\n"
            if body is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            sock.sendall(head.encode() + b"\r\n" + (body or b""))
            sock.settimeout(timeout)
            reader = _Reader(sock)
            status = _read_head(reader)
            sock.settimeout(None)
        except OSError as error:
            sock.close()
            raise Broken(str(error)) from None
        return Response(sock, reader, status)


class _Reader:
    """Buffered reads from a socket (socket.makefile without socket.py)."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._at = 0

    def _fill(self) -> bool:
        """More bytes in the buffer; False at the end of the stream."""
        if self._at:
            del self._buffer[: self._at]
            self._at = 0
        more = self._sock.recv(256 * 1024)
        self._buffer += more
        return bool(more)

    def readline(self, limit: int) -> bytes:
        """A line with its newline (shorter: the stream ended first), at most `limit` bytes."""
        while True:
            end = self._buffer.find(b"\n", self._at, self._at + limit)
            if end >= 0:
                return self.read(end + 1 - self._at)
            if len(self._buffer) - self._at >= limit or not self._fill():
                return self.read(min(limit, len(self._buffer) - self._at))

    def read(self, size: int) -> bytes:
        """`size` bytes, fewer only at the end of the stream."""
        while len(self._buffer) - self._at < size:
            if not self._fill():
                break
        data = bytes(self._buffer[self._at : self._at + size])
        self._at += len(data)
        return data

    def close(self) -> None:
        self._buffer.clear()


def _read_head(reader: _Reader) -> int:
    """The status of a response head (its fields are not needed); Broken if there is none."""
    line = reader.readline(MAX_HEAD_BYTES)
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise Broken("no HTTP answer")
    total = len(line)
    while True:
        field = reader.readline(MAX_HEAD_BYTES)
        total += len(field)
        if not field or total > MAX_HEAD_BYTES:
            raise Broken("no whole HTTP head")
        if field in (b"\r\n", b"\n"):
            return int(parts[1])


class Response:
    """An answer's status and body: JSON read whole, or a log's frames as they come."""

    def __init__(self, sock: _socket.socket, reader: _Reader, status: int) -> None:
        self._sock = sock
        self._reader = reader
        self.status = status

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def json(self) -> object:
        import json

        try:
            body = self._reader.read(MAX_BODY_BYTES + 1)
        except OSError as error:
            raise Broken(str(error)) from None
        finally:
            self.close()
        if len(body) > MAX_BODY_BYTES:
            raise Broken("an answer too long")
        try:
            return json.loads(body)
        except ValueError:
            raise Broken("an answer that is not JSON") from None

    def frames(self) -> Iterator[tuple[bytes, bytes]]:
        """(type, payload) of each frame; Broken when the stream ends between or inside one."""
        read = self._reader.read
        try:
            while True:
                head = read(FRAME_HEAD.size)
                if len(head) < FRAME_HEAD.size:
                    raise Broken("the stream ended")
                kind, size = FRAME_HEAD.unpack(head)
                if size > MAX_FRAME_BYTES:
                    raise Broken("a frame too long")
                payload = read(size)
                if len(payload) < size:
                    raise Broken("the stream ended inside a frame")
                yield kind, payload
        except OSError as error:
            raise Broken(str(error)) from None
