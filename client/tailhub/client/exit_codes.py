"""The CLI's exit codes. Job results follow SkyPilot's convention so existing scripts keep
working; the rest are ours."""

from __future__ import annotations

SUCCEEDED = 0
ERROR = 1  # anything else that went wrong, said on stderr
USAGE = 2  # bad flags, or a task file that cannot be launched
FAILED = 100
NOT_FINISHED = 101
NOT_FOUND = 102
CANCELLED = 103
DAEMON_UNREACHABLE = 104  # no daemon answered (and none could be started)
ACCESS_DENIED = 105  # a remote daemon refused the token (missing, unknown, revoked) or its role
TLS_FAILED = 106  # no TLS connection: an untrusted or expired certificate, TLS on one side only
INTERRUPTED = 130  # Ctrl-C: the job goes on
