"""The client library's errors. gRPC errors become these in one place, `from_rpc_error`.

TailhubError
├── DaemonUnreachable      no daemon answers on the socket (and none could be started)
├── JobNotFoundError       the daemon has no such job
├── InvalidRequestError    the daemon refused the request as asked
├── DiskFullError          the daemon's disk is full: nothing was stored, retry later
├── AccessDenied           a remote daemon refused the token or its role
└── ProtocolError          the daemon answered something a client cannot make sense of
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tailhub.client import exit_codes

if TYPE_CHECKING:  # imported when there is an RPC error: `tailhub --help` needs no grpc
    import grpc

# What the daemon's details for a full disk begin with (daemon service.DISK_FULL).
_DISK_FULL = "disk full"
# What the details of a stream refused by a cap begin with (daemon auth.StreamCaps).
_TOO_MANY_STREAMS = "too many log streams"
# auth.py: a peer past its failed authentications, refused before its token is looked at.
_TOO_MANY_FAILURES = "too many failed authentications"
# quotas.py: a token's open jobs past --max-jobs-per-token, or the daemon's descriptors.
_TOO_MANY_JOBS = ("too many open jobs", "too many open files")


class TailhubError(Exception):
    exit_code = exit_codes.ERROR


class DaemonUnreachable(TailhubError):
    exit_code = exit_codes.DAEMON_UNREACHABLE


class JobNotFoundError(TailhubError):
    exit_code = exit_codes.NOT_FOUND


class InvalidRequestError(TailhubError):
    exit_code = exit_codes.ERROR


class DiskFullError(TailhubError):
    exit_code = exit_codes.ERROR


class AccessDenied(TailhubError):
    exit_code = exit_codes.ACCESS_DENIED


class ProtocolError(TailhubError):
    exit_code = exit_codes.ERROR


# A remote daemon's answer to a token it does not know, or whose role is too low (auth.py).
# Both keyed by the code's name: grpc is imported only once there is an error.
_REFUSED = {"UNAUTHENTICATED": "the token", "PERMISSION_DENIED": "the call"}

# Codes whose details are the whole message.
_AS_IS: dict[str, type[TailhubError]] = {
    "NOT_FOUND": JobNotFoundError,
    "INVALID_ARGUMENT": InvalidRequestError,
    "FAILED_PRECONDITION": InvalidRequestError,
    "OUT_OF_RANGE": InvalidRequestError,
}


def is_transient(error: grpc.RpcError) -> bool:
    """The daemon went away or is stopping: reconnecting may help."""
    import grpc

    return error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def from_rpc_error(error: grpc.RpcError, address: str) -> TailhubError:
    import grpc

    code = error.code()
    details = error.details() or code.name.lower()
    as_is = _AS_IS.get(code.name)
    if as_is is not None:
        return as_is(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return DaemonUnreachable(f"no tailhub daemon answers on {address} ({details})")
    if code is grpc.StatusCode.CANCELLED:
        # We never cancel a unary call ourselves: the daemon was stopping while it answered.
        return DaemonUnreachable(f"the daemon on {address} stopped while answering ({details})")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return _exhausted(details, address)
    if code.name in _REFUSED:
        return AccessDenied(f"{address} refused {_REFUSED[code.name]}: {details}")
    return TailhubError(f"daemon error {code.name}: {details}")


def _exhausted(details: str, address: str) -> TailhubError:
    """The daemon begins a full disk's details so; gRPC's own RESOURCE_EXHAUSTED (a message
    over the daemon's receive limit) is not worth a retry."""
    if details.startswith(_DISK_FULL):
        return DiskFullError(details)
    if details.startswith((_TOO_MANY_STREAMS, *_TOO_MANY_JOBS)):
        return TailhubError(details)
    if details.startswith(_TOO_MANY_FAILURES):
        return AccessDenied(f"{address} refused the call: {details}")
    return InvalidRequestError(
        f"the daemon refused the request as too large ({details}); "
        "see the limits in the README (one Publish: at most 4 MiB)"
    )
