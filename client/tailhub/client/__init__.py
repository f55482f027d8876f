"""The tailhub client library: follow any job's log through the local daemon.

from tailhub.client import Client, LogChunk, LogEnd, resolve_paths

with Client.connect(resolve_paths()) as client:
    for item in client.follow(7):
        if isinstance(item, LogChunk):
            sys.stdout.buffer.write(item.data)
"""

from __future__ import annotations

import os

# Read by gRPC's core when grpc is imported: else it prints each failed TLS handshake on
# stderr as it retries; the client says once why it cannot connect.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# Not typing's: the CLI's lean path (_lean.py) imports this package, and no typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tailhub.client._client import Client
    from tailhub.client._errors import (
        ClusterUnavailable,
        DaemonUnreachable,
        InvalidRequestError,
        JobNotFoundError,
        ProtocolError,
        TailhubError,
    )
    from tailhub.client._remote import Target, target_from, targets_from
    from tailhub.client._types import (
        DaemonStatus,
        JobInfo,
        JobState,
        LogChunk,
        LogEnd,
        LogEvent,
        LogHeartbeat,
        LogItem,
        LogTimeMark,
    )
    from tailhub.daemon.paths import StatePaths

# Imported when first asked for: `tailhub --help` needs none of them, and the CLI must be able
# to defer some of grpc's imports before grpc is imported (see _deferred.py).
_LAZY = {
    "Client": "tailhub.client._client",
    # (The CLI's lean path, _lean.py, imports the package and none of these.)
    "StatePaths": "tailhub.daemon.paths",
    **dict.fromkeys(
        (
            "ClusterUnavailable",
            "DaemonUnreachable",
            "InvalidRequestError",
            "JobNotFoundError",
            "ProtocolError",
            "TailhubError",
        ),
        "tailhub.client._errors",
    ),
    **dict.fromkeys(
        (
            "DaemonStatus",
            "JobInfo",
            "JobState",
            "LogChunk",
            "LogEnd",
            "LogEvent",
            "LogHeartbeat",
            "LogItem",
            "LogTimeMark",
        ),
        "tailhub.client._types",
    ),
    **dict.fromkeys(("Target", "target_from", "targets_from"), "tailhub.client._remote"),
}

__all__ = [
    "Client",
    "ClusterUnavailable",
    "DaemonStatus",
    "DaemonUnreachable",
    "InvalidRequestError",
    "JobInfo",
    "JobNotFoundError",
    "JobState",
    "LogChunk",
    "LogEnd",
    "LogEvent",
    "LogHeartbeat",
    "LogItem",
    "LogTimeMark",
    "ProtocolError",
    "StatePaths",
    "TailhubError",
    "Target",
    "resolve_paths",
    "target_from",
    "targets_from",
]


def resolve_paths(home: str | None = None) -> StatePaths:
    """The state directory's files: `home`, else $TAILHUB_HOME, else ~/.tailhub."""
    from tailhub.daemon.paths import StatePaths, resolve_home

    return StatePaths(resolve_home(home, os.environ))


def __getattr__(name: str) -> Any:
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
