"""The error tree (daemon errors.py) and its one mapping each way: a daemon error becomes a
status, a message and an ErrorInfo in the trailer (service.rpc_status), and the client picks
its own exception from the ErrorInfo's reason (client _errors.from_rpc_error)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tailhub.client import _errors as client
from tailhub.daemon import errors
from tailhub.daemon.service import STATUS_DETAILS_KEY, rpc_status

CLASSES = [
    cls
    for cls in vars(errors).values()
    if inspect.isclass(cls) and issubclass(cls, errors.DaemonError)
]

# What a client raises for each daemon error (exactly this class).
EXPECTED: dict[type[errors.DaemonError], type[client.TailhubError]] = {
    errors.DaemonError: client.TailhubError,  # INTERNAL: a bug, said as such
    errors.JobError: client.InvalidRequestError,
    errors.JobNotFound: client.JobNotFoundError,
    errors.InvalidRequest: client.InvalidRequestError,
    errors.OffsetMismatch: client.InvalidRequestError,
    errors.OutOfRange: client.InvalidRequestError,
    errors.LogDamaged: client.TailhubError,
    errors.TimesUnreadable: client.InvalidRequestError,
    errors.NotStored: client._NotStored,
    errors.StorageFull: client.DiskFullError,
    errors.RedisBehind: client.RedisBehind,
    errors.ResourceLimit: client.TailhubError,
    errors.JobQuotaReached: client.TailhubError,
    errors.LogQuotaReached: client.TailhubError,
    errors.OutOfDescriptors: client.TailhubError,
    errors.TooManyStreams: client.TailhubError,
    errors.Unavailable: client.DaemonUnreachable,
    errors.DaemonStopping: client.DaemonUnreachable,
    errors.ClusterUnavailable: client.ClusterUnavailable,
    errors.NotFetchedYet: client._NotFetchedYet,
    errors.ClusterDataLost: client.TailhubError,
    errors.BadRecord: client.TailhubError,
    errors.BrokenJobKeys: client.TailhubError,
    errors.AccessRefused: client.AccessDenied,
    errors.TokenMissing: client.AccessDenied,
    errors.TokenNotAccepted: client.AccessDenied,
    errors.RoleTooLow: client.AccessDenied,
    errors.TooManyFailedAuthentications: client.AccessDenied,
    errors.UnknownMethod: client.TailhubError,
    errors.WebViewOff: client.InvalidRequestError,
    # The owner endpoint's (an HTTP status, never over gRPC); were it sent:
    errors.HttpRequestRefused: client.InvalidRequestError,
    # Never sent (the fetcher's, tailhubd's own); were they, their status would say:
    errors.UpstreamError: client.DaemonUnreachable,
    errors.UpstreamFailed: client.DaemonUnreachable,
    errors.UpstreamUnusable: client.InvalidRequestError,
    errors.FetchEnded: client.TailhubError,
    errors.InjectedFault: client.TailhubError,
    errors.EssentialTaskDied: client.DaemonUnreachable,
    errors.SetupError: client.InvalidRequestError,
    errors.AlreadyRunning: client.InvalidRequestError,
    errors.UntrustedState: client.TailhubError,
    errors.UnusableState: client.InvalidRequestError,
    errors.HomeOfAnotherKind: client.InvalidRequestError,
    errors.FlagsFileError: client.InvalidRequestError,
    errors.ListenerError: client.InvalidRequestError,
    errors.MetricsListenError: client.InvalidRequestError,
    errors.TokenError: client.InvalidRequestError,
    errors.ClusterRefused: client.InvalidRequestError,
}


def _example(cls: type[errors.DaemonError]) -> errors.DaemonError:
    """One error of `cls`, with the arguments its constructor takes."""
    special: dict[type[errors.DaemonError], tuple[Any, ...]] = {
        errors.JobNotFound: (7,),
        errors.OffsetMismatch: ("job 7's log is 4 bytes long, not 2", 4),
        errors.AlreadyRunning: (Path("/home/h"), "12"),
        errors.ListenerError: ("cannot listen", 5),
        errors.MetricsListenError: ("cannot listen", 5),
        errors.UpstreamFailed: ("gone", 255),
        errors.EssentialTaskDied: ("heartbeat", RuntimeError("boom")),
        errors.DaemonStopping: (),
        errors.HttpRequestRefused: (400, "not an HTTP/1.1 request line"),
    }
    return cls(*special.get(cls, (f"a {cls.__name__}",)))


class _Failed(grpc.RpcError):
    """A failed call as the client library sees one: code, details, trailers."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: Any) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailers


def _through_the_wire(error: errors.DaemonError) -> client.TailhubError:
    return client.from_rpc_error(_Failed(*rpc_status(error)), "unix:/h/tailhubd.sock")


def test_every_class_in_the_tree_is_in_this_test() -> None:
    assert set(CLASSES) == set(EXPECTED)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_class_says_its_own_status_and_kind(cls: type[errors.DaemonError]) -> None:
    assert isinstance(vars(cls).get("kind"), str), "a kind of its own, not its parent's"
    assert cls.kind.isupper()
    assert cls.kind.replace("_", "").isalpha()
    assert isinstance(cls.status, errors.Status)
    assert cls.status is not errors.Status.OK
    # Its status is gRPC's code of the same name and number.
    assert grpc.StatusCode[cls.status.name].value[0] == cls.status


def test_kinds_are_unique() -> None:
    kinds = [cls.kind for cls in CLASSES]
    assert len(kinds) == len(set(kinds))


def test_the_tree_in_the_docstring_names_every_class_with_its_status_and_kind() -> None:
    doc = errors.__doc__ or ""
    for cls in CLASSES:
        line = next((line for line in doc.splitlines() if f" {cls.__name__} " in line), "")
        assert cls.status.name in line.split(), cls
        assert cls.kind in line.split(), cls


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_a_daemon_error_becomes_the_right_client_error(cls: type[errors.DaemonError]) -> None:
    error = _example(cls)
    code, message, ((key, value),) = rpc_status(error)
    assert key == STATUS_DETAILS_KEY == "grpc-status-details-bin"
    assert code is grpc.StatusCode[cls.status.name]
    status = status_pb2.Status.FromString(value)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (status.code, status.message) == (cls.status, message)
    assert (info.reason, info.domain) == (cls.kind, errors.DOMAIN)
    assert dict(info.metadata) == error.metadata()

    raised = _through_the_wire(error)
    assert type(raised) is EXPECTED[cls]
    assert error.message() in str(raised)  # the daemon's own words reach the user
    if cls.kind in client._BY_REASON:
        assert (raised.reason, dict(raised.metadata)) == (cls.kind, error.metadata())


def test_structured_fields_travel_beside_the_message() -> None:
    assert _through_the_wire(errors.JobNotFound(7)).metadata == {"job_id": "7"}
    assert _through_the_wire(errors.OffsetMismatch("not there", 4)).metadata == {"log_size": "4"}
    trimmed = errors.OutOfRange("trimmed", first_offset=1024)
    assert _through_the_wire(trimmed).metadata == {"first_offset": "1024"}


def test_a_full_disk_says_so_and_a_redis_stall_does_not() -> None:
    full = _through_the_wire(errors.StorageFull("job 3 failed: cannot create its log"))
    assert str(full) == "disk full: job 3 failed: cannot create its log"
    behind = _through_the_wire(errors.RedisBehind("Redis has not stored the last 9 bytes yet"))
    assert "disk" not in str(behind)
    assert "Redis is behind" in str(behind)
    assert "sent again" in str(behind)  # what to do
    assert behind.retry_later
    assert not behind.elsewhere  # the job's bytes go to its own node


def test_a_cluster_outage_is_retried_elsewhere_and_a_job_not_taken_back_here() -> None:
    outage = _through_the_wire(errors.ClusterUnavailable("Redis at r:6379 is unreachable"))
    assert outage.retry_later
    assert outage.elsewhere
    assert outage.exit_code == 104
    waiting = _through_the_wire(errors.NotFetchedYet("job 3 is not taken back yet"))
    assert isinstance(waiting, client.ClusterUnavailable)
    assert waiting.retry_later
    assert not waiting.elsewhere
    lost = _through_the_wire(errors.ClusterDataLost("Redis lost the cluster's data"))
    assert not lost.retry_later
    assert lost.exit_code == 1


def test_an_unexpected_exception_is_internal() -> None:
    code, message, _ = rpc_status(errors.DaemonError("internal error: boom"))
    assert code is grpc.StatusCode.INTERNAL
    assert str(_through_the_wire(errors.DaemonError("internal error: boom"))) == (
        "daemon error INTERNAL: internal error: boom"
    )


def test_without_error_info_the_code_decides() -> None:
    """gRPC's own statuses (or an older daemon's) carry no ErrorInfo."""
    too_large = _Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "message larger than max", ())
    assert type(client.from_rpc_error(too_large, "a")) is client.InvalidRequestError
    away = _Failed(grpc.StatusCode.UNAVAILABLE, "connection refused", ())
    assert type(client.from_rpc_error(away, "a")) is client.DaemonUnreachable
    foreign = status_pb2.Status(code=5, message="x")
    foreign.details.add().Pack(error_details_pb2.ErrorInfo(reason="JOB_NOT_FOUND", domain="x.y"))
    other_domain = _Failed(
        grpc.StatusCode.NOT_FOUND, "x", ((STATUS_DETAILS_KEY, foreign.SerializeToString()),)
    )
    assert client.error_info(other_domain) == ("", {})


@pytest.mark.parametrize(
    "trailer",
    [b"", b"\x00\xff\xfe garbage", b"\x1b]8;;http://x\x07" * 1000],
    ids=["empty", "not-protobuf", "escapes"],
)
def test_a_hostile_trailer_is_ignored_and_the_code_decides(trailer: bytes) -> None:
    """A server that is not our daemon may send anything in the details trailer."""
    failed = _Failed(grpc.StatusCode.NOT_FOUND, "x", ((STATUS_DETAILS_KEY, trailer),))
    assert client.error_info(failed) == ("", {})
    assert type(client.from_rpc_error(failed, "a")) is client.JobNotFoundError


def test_an_unknown_reason_falls_back_to_the_code() -> None:
    status = status_pb2.Status(code=5, message="x")
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason="NO_SUCH_KIND" * 50, domain="tailhub.dev")
    )
    failed = _Failed(
        grpc.StatusCode.NOT_FOUND, "x", ((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )
    assert type(client.from_rpc_error(failed, "a")) is client.JobNotFoundError


class _Refusing(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A server whose every call fails with `error`, told as the daemon tells it."""

    def __init__(self, error: errors.DaemonError) -> None:
        self.error = error

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            code, message, trailer = rpc_status(self.error)
            context.set_trailing_metadata(trailer)
            context.abort(code, message)
            raise AssertionError("abort returns no more")

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[tuple[str, _Refusing]]:
    handler = _Refusing(errors.DaemonError())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), handlers=[handler])
    address = f"unix:{tmp_path}/s.sock"
    server.add_insecure_port(address)
    server.start()
    try:
        yield address, handler
    finally:
        server.stop(None).wait()


@pytest.mark.parametrize(
    "error", [errors.JobNotFound(9), errors.ClusterUnavailable("away"), errors.StorageFull("x")]
)
def test_the_trailer_crosses_a_real_grpc_connection(
    refusing: tuple[str, _Refusing], error: errors.DaemonError
) -> None:
    address, handler = refusing
    handler.error = error
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/tailhub.v1.TailhubService/GetJob",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as raised:
            call(b"", timeout=10)
    assert client.error_info(raised.value) == (error.kind, error.metadata())
    assert type(client.from_rpc_error(raised.value, address)) is EXPECTED[type(error)]
