"""The service manager's readiness protocol (sd_notify(3)), with the standard library only.

Under systemd's `Type=notify`, the daemon says `READY=1` on the datagram socket named by
NOTIFY_SOCKET once every socket it serves accepts connections, and `STOPPING=1` when it
begins to drain. The variable is taken out of the environment when read: jobs and upstream
commands the daemon starts must not tell systemd anything in its name.

A notifier never stops the daemon: a bad address or a failed send is logged, and the daemon
serves on (systemd, if it waits, times the start out and says so itself).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

logger = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"
# sun_path holds 108 bytes, the terminating NUL of a path included.
_MAX_ADDRESS = 107


class Notifier:
    """Sends state lines to the service manager; does nothing when none is listening."""

    def __init__(self, address: str | bytes | None) -> None:
        self._address = address

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str]) -> Notifier:
        """The notifier NOTIFY_SOCKET asks for, removing it from `environ`."""
        value = environ.pop(ENV, None)
        if not value:
            return cls(None)
        try:
            return cls(_address(value))
        except ValueError as error:
            logger.warning("%s=%r: %s; not notifying the service manager", ENV, value, error)
            return cls(None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> None:
        """Sends `lines` (`READY=1`, `STATUS=...`) as one datagram; logs a failure."""
        if self._address is None:
            return
        message = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the event loop on a receiver whose queue is full.
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as error:
            logger.warning("cannot notify the service manager (%s): %s", lines[0], error)


def _address(value: str) -> str | bytes:
    """The socket address of a NOTIFY_SOCKET value: an absolute path, or `@NAME` for a name
    in the abstract namespace."""
    if value.startswith("@"):
        name = b"\0" + os.fsencode(value[1:])
        if len(name) > _MAX_ADDRESS + 1:
            raise ValueError("the abstract socket name is too long")
        return name
    if not value.startswith("/"):
        raise ValueError("neither an absolute path nor an abstract name (@NAME)")
    if len(os.fsencode(value)) > _MAX_ADDRESS:
        raise ValueError("the socket path is too long")
    return value
