"""Every error the daemon raises on purpose, each with its gRPC status and its kind.

The kind is a stable UPPER_SNAKE reason: a client reads it from the `google.rpc.ErrorInfo`
(domain `tailhub.dev`) in a failed call's `grpc-status-details-bin` trailer, never from the
message, which is for people. The service turns an error into its status, message and details
in one place (`service.rpc_status`); the client library turns those into its own exceptions in
one place (`tailhub.client._errors`). An exception that is none of these is a bug: INTERNAL.

    class                                status               kind (ErrorInfo.reason)
    DaemonError                          INTERNAL             INTERNAL
    ├── JobError                         FAILED_PRECONDITION  JOB_REFUSED
    │   ├── JobNotFound                  NOT_FOUND            JOB_NOT_FOUND        {job_id}
    │   ├── InvalidRequest               INVALID_ARGUMENT     INVALID_REQUEST
    │   ├── OffsetMismatch               FAILED_PRECONDITION  OFFSET_MISMATCH      {log_size}
    │   ├── OutOfRange                   OUT_OF_RANGE         LOG_TRIMMED          {first_offset}
    │   ├── LogDamaged                   DATA_LOSS            LOG_DAMAGED
    │   └── TimesUnreadable              FAILED_PRECONDITION  TIMES_UNREADABLE
    ├── NotStored                        UNAVAILABLE          NOT_STORED
    │   ├── StorageFull                  RESOURCE_EXHAUSTED   DISK_FULL
    │   └── RedisBehind                  UNAVAILABLE          REDIS_BEHIND
    ├── ResourceLimit                    RESOURCE_EXHAUSTED   RESOURCE_LIMIT
    │   ├── JobQuotaReached              RESOURCE_EXHAUSTED   TOO_MANY_JOBS
    │   ├── LogQuotaReached              RESOURCE_EXHAUSTED   TOO_MANY_LOG_BYTES
    │   ├── OutOfDescriptors             RESOURCE_EXHAUSTED   TOO_MANY_OPEN_FILES
    │   └── TooManyStreams               RESOURCE_EXHAUSTED   TOO_MANY_STREAMS
    ├── Unavailable                      UNAVAILABLE          UNAVAILABLE
    │   ├── DaemonStopping               UNAVAILABLE          DAEMON_STOPPING
    │   └── ClusterUnavailable           UNAVAILABLE          CLUSTER_UNAVAILABLE
    │       └── NotFetchedYet            UNAVAILABLE          NOT_FETCHED_YET
    ├── ClusterDataLost                  FAILED_PRECONDITION  CLUSTER_DATA_LOST
    ├── BadRecord (ValueError)           DATA_LOSS            BAD_RECORD           (never sent)
    ├── BrokenJobKeys                    DATA_LOSS            BROKEN_JOB_KEYS      (never sent)
    ├── AccessRefused                    PERMISSION_DENIED    ACCESS_REFUSED
    │   ├── TokenMissing                 UNAUTHENTICATED      TOKEN_MISSING
    │   ├── TokenNotAccepted             UNAUTHENTICATED      TOKEN_NOT_ACCEPTED
    │   ├── RoleTooLow                   PERMISSION_DENIED    ROLE_TOO_LOW
    │   └── TooManyFailedAuthentications RESOURCE_EXHAUSTED   TOO_MANY_FAILED_AUTHENTICATIONS
    ├── UnknownMethod                    UNIMPLEMENTED        UNKNOWN_METHOD
    ├── WebViewOff                       FAILED_PRECONDITION  WEB_VIEW_OFF
    ├── HttpRequestRefused               INVALID_ARGUMENT     HTTP_REQUEST_REFUSED (owner_http only)
    ├── UpstreamError                    UNAVAILABLE          UPSTREAM_ERROR       (fetcher only)
    │   ├── UpstreamFailed               UNAVAILABLE          UPSTREAM_FAILED
    │   └── UpstreamUnusable             FAILED_PRECONDITION  UPSTREAM_UNUSABLE
    ├── FetchEnded                       ABORTED              FETCH_ENDED          (fetcher only)
    ├── InjectedFault (RuntimeError)     INTERNAL             INJECTED_FAULT       (never sent)
    ├── EssentialTaskDied                UNAVAILABLE          ESSENTIAL_TASK_DIED  (never sent)
    └── SetupError                       FAILED_PRECONDITION  SETUP_REFUSED        (never sent)
        ├── AlreadyRunning               FAILED_PRECONDITION  ALREADY_RUNNING
        ├── UntrustedState (OSError)     PERMISSION_DENIED    UNTRUSTED_STATE
        ├── UnusableState                FAILED_PRECONDITION  UNUSABLE_STATE
        ├── HomeOfAnotherKind            FAILED_PRECONDITION  HOME_OF_ANOTHER_KIND
        ├── FlagsFileError               INVALID_ARGUMENT     FLAGS_FILE_UNUSABLE
        ├── ListenerError                FAILED_PRECONDITION  LISTENER_UNUSABLE
        │   └── MetricsListenError       FAILED_PRECONDITION  METRICS_LISTENER_UNUSABLE
        ├── TokenError (ValueError)      INVALID_ARGUMENT     TOKEN_STORE_UNUSABLE
        └── ClusterRefused               FAILED_PRECONDITION  CLUSTER_REFUSED

`{field}`: ErrorInfo.metadata the error carries besides its message (decimal strings).
Those marked (never sent) or (fetcher only) never reach a client: UpstreamError ends or
retries a fetch (the job fails with its message), FetchEnded stops a fetch another daemon took
over, BadRecord is a record in Redis skipped with a warning, BrokenJobKeys is one job's keys
that Redis refuses to write or read (that job fails, or stops being read here; the node stays
reachable), InjectedFault and EssentialTaskDied stop tailhubd (a supervised loop crashed),
SetupError stops tailhubd or a command with its message. Their statuses say what they would
be if they ever did.

This module imports nothing of grpc: the client imports some of these (UntrustedState) on
paths that must not load grpc (`tailhub --help`).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import ClassVar

# ErrorInfo.domain of every error the daemon sends.
DOMAIN = "tailhub.dev"


class Status(enum.IntEnum):
    """gRPC's status codes, by their numbers (those of grpc.StatusCode and google.rpc.Code)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class DaemonError(Exception):
    """Base of the daemon's errors. `status` and `kind` say how a client is told of it."""

    status: ClassVar[Status] = Status.INTERNAL
    kind: ClassVar[str] = "INTERNAL"

    def metadata(self) -> dict[str, str]:
        """Structured fields a client may need besides the message (ErrorInfo.metadata)."""
        return {}

    def message(self) -> str:
        """What a client is told (the status message): one line for people."""
        return str(self) or self.kind.lower().replace("_", " ")


# -- a call about a job ----------------------------------------------------------------------
class JobError(DaemonError):
    """A call about a job that cannot be carried out as asked."""

    status = Status.FAILED_PRECONDITION
    kind = "JOB_REFUSED"


class JobNotFound(JobError):
    status = Status.NOT_FOUND
    kind = "JOB_NOT_FOUND"

    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id

    def metadata(self) -> dict[str, str]:
        return {"job_id": str(self.job_id)}


class InvalidRequest(JobError):
    """The request cannot be carried out as asked (wrong source kind, job already ended...)."""

    status = Status.INVALID_ARGUMENT
    kind = "INVALID_REQUEST"


class OffsetMismatch(JobError):
    """A Publish expected the log to end at another offset than it does."""

    status = Status.FAILED_PRECONDITION
    kind = "OFFSET_MISMATCH"

    def __init__(self, message: str, log_size: int) -> None:
        super().__init__(message)
        self.log_size = log_size

    def metadata(self) -> dict[str, str]:
        return {"log_size": str(self.log_size)}


class OutOfRange(JobError):
    """Cluster mode: the bytes asked for were trimmed (Redis retention) before this daemon
    read them; the message names the first offset it has."""

    status = Status.OUT_OF_RANGE
    kind = "LOG_TRIMMED"

    def __init__(self, message: str, first_offset: int | None = None) -> None:
        super().__init__(message)
        self.first_offset = first_offset

    def metadata(self) -> dict[str, str]:
        return {} if self.first_offset is None else {"first_offset": str(self.first_offset)}


class LogDamaged(JobError):
    """The log on disk holds less than the daemon stored in it (changed behind its back)."""

    status = Status.DATA_LOSS
    kind = "LOG_DAMAGED"


class TimesUnreadable(JobError):
    """The job's arrival times cannot be read (a planted file): no --since, no timestamps."""

    status = Status.FAILED_PRECONDITION
    kind = "TIMES_UNREADABLE"


# -- a write not stored ------------------------------------------------------------------------
class NotStored(DaemonError):
    """Nothing of a write was stored; the same write may be sent again once the cause passes.
    A fetcher waits and writes again; a publisher is told so and retries."""

    status = Status.UNAVAILABLE
    kind = "NOT_STORED"


class StorageFull(NotStored):
    """The disk holding the state directory is full: nothing was stored, retry when freed."""

    status = Status.RESOURCE_EXHAUSTED
    kind = "DISK_FULL"

    def message(self) -> str:
        told = super().message()
        return told if told.startswith("disk full") else f"disk full: {told}"


class RedisBehind(NotStored):
    """Cluster mode: Redis has not stored what this node took yet (it is slow or away); the
    fetch pauses, a publish is refused, until it has. Not a full disk."""

    status = Status.UNAVAILABLE
    kind = "REDIS_BEHIND"


# -- limits ------------------------------------------------------------------------------------
class ResourceLimit(DaemonError):
    """A call refused because it would pass a quota, a cap or the descriptor budget; the
    message begins "too many"."""

    status = Status.RESOURCE_EXHAUSTED
    kind = "RESOURCE_LIMIT"


class JobQuotaReached(ResourceLimit):
    """A token holds --max-jobs-per-token jobs not ended."""

    kind = "TOO_MANY_JOBS"


class LogQuotaReached(ResourceLimit):
    """A token's jobs' logs would hold more than --max-log-bytes-per-token."""

    kind = "TOO_MANY_LOG_BYTES"


class OutOfDescriptors(ResourceLimit):
    """A new job would use descriptors the daemon keeps for its own work."""

    kind = "TOO_MANY_OPEN_FILES"


class TooManyStreams(ResourceLimit):
    """A Subscribe over the network past --max-streams or --max-streams-per-token."""

    kind = "TOO_MANY_STREAMS"


# -- not now -------------------------------------------------------------------------------------
class Unavailable(DaemonError):
    """The call cannot be served now; nothing was done, the same call may be sent again."""

    status = Status.UNAVAILABLE
    kind = "UNAVAILABLE"


class DaemonStopping(Unavailable):
    """The daemon is shutting down; the client should reconnect and resume."""

    kind = "DAEMON_STOPPING"

    def __init__(self, message: str = "daemon stopping") -> None:
        super().__init__(message)


class ClusterUnavailable(Unavailable):
    """Cluster mode: Redis cannot be reached from this node, so nothing can be created or
    stored here now; another node, or this one later, may take the call."""

    kind = "CLUSTER_UNAVAILABLE"


class NotFetchedYet(ClusterUnavailable):
    """Cluster mode: this daemon fetches the job once it has taken it back (after its
    restart, or once Redis is reachable again); the client retries, on this node."""

    kind = "NOT_FETCHED_YET"


class ClusterDataLost(DaemonError):
    """Cluster mode: Redis came back without the cluster's data; nothing is created until
    someone has looked (the daemon's log says what to do)."""

    status = Status.FAILED_PRECONDITION
    kind = "CLUSTER_DATA_LOST"


class BadRecord(DaemonError, ValueError):
    """A record in Redis that this daemon cannot use (input like any other: checked)."""

    status = Status.DATA_LOSS
    kind = "BAD_RECORD"


class BrokenJobKeys(DaemonError):
    """Redis refused a command on one job's keys (its stream is a key of another type, or
    holds entries past the size its record says): that job's fault, not Redis's, so the
    node stays reachable and every other job goes on. `job_ids` are the jobs concerned."""

    status = Status.DATA_LOSS
    kind = "BROKEN_JOB_KEYS"

    def __init__(self, message: str, job_ids: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.job_ids = job_ids


# -- who may call --------------------------------------------------------------------------------
class AccessRefused(DaemonError):
    """A caller over the network refused by auth.py before the call runs."""

    status = Status.PERMISSION_DENIED
    kind = "ACCESS_REFUSED"


class TokenMissing(AccessRefused):
    status = Status.UNAUTHENTICATED
    kind = "TOKEN_MISSING"


class TokenNotAccepted(AccessRefused):
    status = Status.UNAUTHENTICATED
    kind = "TOKEN_NOT_ACCEPTED"


class RoleTooLow(AccessRefused):
    """The token's role may not make this call (or not on this job, or this source)."""

    status = Status.PERMISSION_DENIED
    kind = "ROLE_TOO_LOW"


class TooManyFailedAuthentications(AccessRefused):
    """A peer past its failed authentications, refused before its token is looked at."""

    status = Status.RESOURCE_EXHAUSTED
    kind = "TOO_MANY_FAILED_AUTHENTICATIONS"


class UnknownMethod(DaemonError):
    status = Status.UNIMPLEMENTED
    kind = "UNKNOWN_METHOD"


class WebViewOff(DaemonError):
    """CreateWebLogin on a daemon started without --http-listen: there is no page to log in to."""

    status = Status.FAILED_PRECONDITION
    kind = "WEB_VIEW_OFF"


class HttpRequestRefused(DaemonError):
    """A request to the owner's lean endpoint (owner_http.py) that it cannot read or does not
    serve: answered with `http_status` (400, 404, 405, 411, 413, 431, 501), never over gRPC."""

    status = Status.INVALID_ARGUMENT
    kind = "HTTP_REQUEST_REFUSED"

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status


# -- a fetch (never sent) ------------------------------------------------------------------------
class UpstreamError(DaemonError):
    """What a source tells its fetcher; the job fails with the message when it gives up."""

    status = Status.UNAVAILABLE
    kind = "UPSTREAM_ERROR"

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UpstreamFailed(UpstreamError):
    """The connection to the upstream broke; the fetcher reconnects with backoff."""

    kind = "UPSTREAM_FAILED"

    def __init__(self, message: str, exit_code: int, *, healthy: bool = False) -> None:
        super().__init__(message, exit_code)
        # The upstream worked and asked to be followed again (SkyPilot's "not finished"):
        # not a failure towards the limit of failures in a row.
        self.healthy = healthy


class UpstreamUnusable(UpstreamError):
    """The upstream cannot be fetched at all (missing program, unreadable file): no retry."""

    status = Status.FAILED_PRECONDITION
    kind = "UPSTREAM_UNUSABLE"


class FetchEnded(DaemonError):
    """The fetch ended without the job ending: another daemon fetches it now."""

    status = Status.ABORTED
    kind = "FETCH_ENDED"


class InjectedFault(DaemonError, RuntimeError):
    """What a task named in TAILHUB_FAIL_LOOP raises (faults.py): a crash on purpose."""

    kind = "INJECTED_FAULT"


# -- the daemon's own loops (never sent) ---------------------------------------------------------
class EssentialTaskDied(DaemonError):
    """An essential task (supervisor.py) ended while the daemon served: the daemon stops,
    and tailhubd exits `exit_code` with this reason, for its service manager to restart it."""

    status = Status.UNAVAILABLE
    kind = "ESSENTIAL_TASK_DIED"
    # tailhubd's exit status after an essential task died (docs/cli.md): a restart mends it.
    exit_code = 8

    def __init__(self, name: str, error: BaseException | None) -> None:
        self.task_name = name
        self.error = error
        how = f"crashed: {error!r}" if error is not None else "returned, and must run for ever"
        super().__init__(f"essential task {name!r} {how}; the daemon stops")


# -- setting up (never sent) ---------------------------------------------------------------------
class SetupError(DaemonError):
    """The state directory, a flag or a file cannot be used as it is; said in one line."""

    status = Status.FAILED_PRECONDITION
    kind = "SETUP_REFUSED"


class AlreadyRunning(SetupError):
    kind = "ALREADY_RUNNING"

    def __init__(self, home: Path, pid: str) -> None:
        who = f" (pid {pid})" if pid else ""
        super().__init__(f"another tailhubd already serves {home}{who}")


class UntrustedState(SetupError, OSError):
    """A state directory or file that someone else could have planted or can change."""

    status = Status.PERMISSION_DENIED
    kind = "UNTRUSTED_STATE"

    def __init__(self, message: str) -> None:
        # One argument: str(error) is the message itself, as the CLI and daemon print it.
        super().__init__(message)


class UnusableState(SetupError):
    """The state directory cannot be used as it is; the message says what to move aside."""

    kind = "UNUSABLE_STATE"


class HomeOfAnotherKind(SetupError):
    """A daemon alone asked to run on a cluster node's state directory; one line."""

    kind = "HOME_OF_ANOTHER_KIND"
    # tailhubd's exit status when it refuses a state directory of another kind of daemon.
    exit_code = 7


class FlagsFileError(SetupError):
    """The file cannot be used; str() is one line naming it, the problem and the fix."""

    status = Status.INVALID_ARGUMENT
    kind = "FLAGS_FILE_UNUSABLE"


class ListenerError(SetupError):
    """A listener that cannot be set up, said in one line; `exit_code` for tailhubd."""

    kind = "LISTENER_UNUSABLE"

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class MetricsListenError(ListenerError):
    """The metrics address cannot be bound (in use, not local, not permitted): tailhubd
    exits as for a --listen address."""

    kind = "METRICS_LISTENER_UNUSABLE"


class TokenError(SetupError, ValueError):
    """A token name or store that cannot be used (said in one line)."""

    status = Status.INVALID_ARGUMENT
    kind = "TOKEN_STORE_UNUSABLE"


class ClusterRefused(SetupError):
    """This daemon cannot join the cluster; the message says why and what to do."""

    kind = "CLUSTER_REFUSED"
