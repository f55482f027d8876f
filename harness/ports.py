"""Ports of one's own."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port free at this moment (the kernel's pick: never a fixed number, so
    that runs in parallel do not collide; a caller that loses a race for it tries another)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
