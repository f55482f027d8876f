"""The client library's errors. gRPC errors become these in one place, `from_rpc_error`.

TailhubError
├── DaemonUnreachable      no daemon answers on the socket (and none could be started)
│   └── ClusterUnavailable the daemon answers, but its cluster cannot take the call now (its
│       │                  Redis is unreachable): nothing was done; the client calls again,
│       │                  on the next server of a list first, before it raises this
│       └── RedisBehind    the cluster's Redis has not stored what this daemon took yet:
│                          nothing of the call was stored; sent again on the same server
├── JobNotFoundError       the daemon has no such job
├── InvalidRequestError    the daemon refused the request as asked
├── DiskFullError          the daemon's disk is full: nothing was stored, retry later
├── AccessDenied           a remote daemon refused the token or its role
└── ProtocolError          the daemon answered something a client cannot make sense of

The daemon says which of its errors it sends as the reason of a `google.rpc.ErrorInfo` (domain
`tailhub.dev`) in the call's `grpc-status-details-bin` trailer (daemon errors.py); the class is
picked from that reason, never from the message. A status without one is gRPC's own (the daemon
is away, a message over the size limit) or an older daemon's: picked from its code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from tailhub.client import exit_codes
from tailhub.daemon import errors as daemon

if TYPE_CHECKING:  # imported when there is an RPC error: `tailhub --help` needs no grpc
    import grpc


class TailhubError(Exception):
    exit_code = exit_codes.ERROR
    # The daemon did nothing and may take the same call a little later: the client calls
    # again for a while before it raises this (on the next server of a list first when
    # `elsewhere`: another node may reach what this one cannot).
    retry_later: ClassVar[bool] = False
    elsewhere: ClassVar[bool] = False

    def __init__(
        self, message: str, *, reason: str = "", metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        # The daemon's ErrorInfo: its kind of error (daemon errors.py), and the fields it
        # gives with it (a job id, an offset); empty for an error the client found itself.
        self.reason = reason
        self.metadata: Mapping[str, str] = dict(metadata or {})


class DaemonUnreachable(TailhubError):
    exit_code = exit_codes.DAEMON_UNREACHABLE


class ClusterUnavailable(DaemonUnreachable):
    retry_later = True
    elsewhere = True


class RedisBehind(ClusterUnavailable):
    elsewhere = False  # the job's bytes go to the node that fetches it, and to no other


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


class _NotFetchedYet(ClusterUnavailable):
    """The node that fetches the job has not taken it back yet (it restarted): called again
    on the same node, the only one that takes its bytes; raised as ClusterUnavailable."""

    elsewhere = False


class _NotStored(DaemonUnreachable):
    """A Publish the daemon answered without storing its bytes (the job's fetch ended there:
    its lease moved, or the job failed): sent again it may be stored, or told why not; raised
    as DaemonUnreachable, said in the daemon's words."""


# What the daemon's errors become: (class, message from the daemon's message and address).
Told = Callable[[str, str], str]


def _as_said(details: str, address: str) -> str:
    return details


def _on(details: str, address: str) -> str:
    return f"{details} (on {address})"


_BY_REASON: dict[str, tuple[type[TailhubError], Told]] = {
    daemon.JobNotFound.kind: (JobNotFoundError, _as_said),
    **dict.fromkeys(
        (
            daemon.JobError.kind,
            daemon.InvalidRequest.kind,
            daemon.OffsetMismatch.kind,
            daemon.OutOfRange.kind,
            daemon.TimesUnreadable.kind,
            daemon.WebViewOff.kind,
        ),
        (InvalidRequestError, _as_said),
    ),
    daemon.StorageFull.kind: (DiskFullError, _as_said),
    daemon.RedisBehind.kind: (
        RedisBehind,
        lambda details, address: (
            f"the cluster's Redis is behind: {details} (on {address}); nothing of this call "
            "was stored and it may be sent again; if this lasts, check that Redis is up and "
            "keeps up"
        ),
    ),
    **dict.fromkeys(
        (
            daemon.ResourceLimit.kind,
            daemon.JobQuotaReached.kind,
            daemon.LogQuotaReached.kind,
            daemon.OutOfDescriptors.kind,
            daemon.TooManyStreams.kind,
            daemon.LogDamaged.kind,
            daemon.ClusterDataLost.kind,
            # A file of the job's the daemon will not trust (a planted link): the job's
            # fault, never the caller's credentials (exit 105 is for those).
            daemon.UntrustedState.kind,
        ),
        (TailhubError, _as_said),
    ),
    daemon.NotStored.kind: (_NotStored, _on),
    daemon.ClusterUnavailable.kind: (ClusterUnavailable, _on),
    daemon.NotFetchedYet.kind: (_NotFetchedYet, _on),
    **dict.fromkeys(
        (daemon.Unavailable.kind, daemon.DaemonStopping.kind),
        (DaemonUnreachable, lambda details, address: _unreachable(address, details)),
    ),
    **dict.fromkeys(
        (daemon.TokenMissing.kind, daemon.TokenNotAccepted.kind),
        (AccessDenied, lambda details, address: f"{address} refused the token: {details}"),
    ),
    **dict.fromkeys(
        (
            daemon.AccessRefused.kind,
            daemon.RoleTooLow.kind,
            daemon.TooManyFailedAuthentications.kind,
        ),
        (AccessDenied, lambda details, address: f"{address} refused the call: {details}"),
    ),
}

# A status without ErrorInfo: gRPC's own, or an older daemon's. Keyed by the code's name:
# grpc is imported only once there is an error.
_REFUSED = {"UNAUTHENTICATED": "the token", "PERMISSION_DENIED": "the call"}
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
    """The client's error for a failed call to the daemon at `address`."""
    details = error.details() or error.code().name.lower()
    reason, metadata = error_info(error)
    known = _BY_REASON.get(reason)
    if known is not None:
        kind, told = known
        return kind(told(details, address), reason=reason, metadata=metadata)
    return _from_code(error, details, address)


def error_info(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The reason and metadata of the ErrorInfo (domain tailhub.dev) in the call's
    `grpc-status-details-bin` trailer; ("", {}) when it holds none."""
    trailer = next(
        (
            value
            for key, value in _trailers(error)
            if key == "grpc-status-details-bin" and isinstance(value, bytes)
        ),
        None,
    )
    if trailer is None:
        return "", {}
    from google.protobuf.message import DecodeError
    from google.rpc import error_details_pb2, status_pb2

    try:
        status = status_pb2.Status.FromString(trailer)
    except DecodeError:
        return "", {}
    if status.code != error.code().value[0]:
        return "", {}  # not the status of this call: no one's word for its kind
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == daemon.DOMAIN:
            return info.reason, dict(info.metadata)
    return "", {}


def _trailers(error: grpc.RpcError) -> list[tuple[str, object]]:
    try:
        # (key, value) pairs; the stubs' _Metadatum is a guess of theirs.
        trailers: Any = error.trailing_metadata() or ()
    except AttributeError:  # (an RpcError that is no call: raised by a library)
        return []
    return [(key, value) for key, value in trailers]


def _from_code(error: grpc.RpcError, details: str, address: str) -> TailhubError:
    import grpc

    code = error.code()
    as_is = _AS_IS.get(code.name)
    if as_is is not None:
        return as_is(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return DaemonUnreachable(_unreachable(address, details))
    if code is grpc.StatusCode.CANCELLED:
        # We never cancel a unary call ourselves: the daemon was stopping while it answered.
        return DaemonUnreachable(f"the daemon on {address} stopped while answering ({details})")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        # gRPC's own: a message over the daemon's receive limit, not worth a retry.
        return InvalidRequestError(
            f"the daemon refused the request as too large ({details}); "
            "see the limits in the README (one Publish: at most 4 MiB)"
        )
    if code.name in _REFUSED:
        return AccessDenied(f"{address} refused {_REFUSED[code.name]}: {details}")
    return TailhubError(f"daemon error {code.name}: {details}")


def _unreachable(address: str, details: str) -> str:
    return f"no tailhub daemon answers on {address} ({details})"
