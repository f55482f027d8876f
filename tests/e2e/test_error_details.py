"""Error kinds travel as the standard rich error model: a `google.rpc.Status` in the
`grpc-status-details-bin` trailer, whose ErrorInfo (domain tailhub.dev) gives the kind as its
reason. A client in any language reads it with a plain stub; ours retries a cluster that is
unavailable instead of failing at once."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from cluster_helpers import NOT_SERVING, SERVING, Cluster, cluster_health
from google.rpc import error_details_pb2, status_pb2
from helpers import DaemonProcess, wait_until
from redis_helpers import RedisServer
from remote_helpers import free_port, write_token

from tailhub.client import Client, targets_from
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc


def _error_info(error: grpc.RpcError) -> tuple[status_pb2.Status, error_details_pb2.ErrorInfo]:
    """What any gRPC client reads: the trailer, its Status, the ErrorInfo in its details."""
    pairs: Any = error.trailing_metadata() or ()
    trailers: dict[str, Any] = dict(pairs)
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return status, info


def _failed(call: grpc.UnaryUnaryMultiCallable, request: object) -> grpc.RpcError:  # type: ignore[type-arg]
    try:
        call(request, timeout=20)
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call did not fail")


def test_a_plain_grpc_client_reads_the_kind_of_an_error_from_its_trailer(
    daemon: DaemonProcess,
) -> None:
    with grpc.insecure_channel(daemon.paths.address) as channel:
        stub = rpc.TailhubServiceStub(channel)
        error = _failed(stub.GetJob, pb.GetJobRequest(job_id=4242))
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert error.details() == "job 4242 not found"  # the message stays for people
        status, info = _error_info(error)
        assert (status.code, status.message) == (
            grpc.StatusCode.NOT_FOUND.value[0],
            "job 4242 not found",
        )
        assert (info.reason, info.domain) == ("JOB_NOT_FOUND", "tailhub.dev")
        assert dict(info.metadata) == {"job_id": "4242"}

        pushed = stub.AttachJob(pb.AttachJobRequest(push=pb.PushSource()), timeout=20).job
        stub.Publish(pb.PublishRequest(job_id=pushed.id, data=b"four"), timeout=20)
        error = _failed(
            stub.Publish, pb.PublishRequest(job_id=pushed.id, data=b"x", expected_offset=2)
        )
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        _, info = _error_info(error)
        assert info.reason == "OFFSET_MISMATCH"
        assert dict(info.metadata) == {"log_size": "4"}  # where to publish instead

        error = _failed(stub.Publish, pb.PublishRequest(job_id=pushed.id + 1, data=b"x"))
        assert _error_info(error)[1].reason == "JOB_NOT_FOUND"


def test_a_call_is_retried_while_the_cluster_is_unavailable_and_then_succeeds(
    redis_server: RedisServer, cluster: Cluster
) -> None:
    (node,) = cluster.start(1)
    redis_server.kill()
    wait_until(lambda: cluster_health(node) == NOT_SERVING, what="NOT_SERVING")
    # What the node answers while its Redis is away: UNAVAILABLE, with its kind.
    with grpc.insecure_channel(node.paths.address) as channel:
        error = _failed(
            rpc.TailhubServiceStub(channel).AttachJob, pb.AttachJobRequest(push=pb.PushSource())
        )
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert _error_info(error)[1].reason == "CLUSTER_UNAVAILABLE"

    told: list[str] = []
    attached: list[int] = []
    failed: list[BaseException] = []

    def attach() -> None:
        try:
            with Client.connect(node.paths, autostart=False, on_wait=told.append) as client:
                attached.append(client.attach_push("through the outage").id)
        except BaseException as error:  # (reported by the test)
            failed.append(error)

    caller = threading.Thread(target=attach)
    caller.start()
    try:
        wait_until(lambda: bool(told) or not caller.is_alive(), what="the client to retry")
        assert not failed, failed
        assert "is unreachable" in told[0]
        assert "trying again" in told[0]
        time.sleep(0.5)  # (the outage goes on a little: the client keeps trying)
        redis_server.restart()
        caller.join(60)
    finally:
        caller.join(60)
    assert not failed, failed
    assert len(attached) == 1
    wait_until(lambda: cluster_health(node) == SERVING, what="SERVING again")
    assert cluster.job(attached[0]).name == "through the outage"


class _Proxy:
    """A TCP relay to Redis for one node: cut, that node alone loses Redis."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._listener.accept()
                far = socket.create_connection(("127.0.0.1", self._port))
            except OSError:
                return
            with self._lock:
                self._open += [near, far]
            for one, other in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(one, other), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._listener.close()
        with self._lock:
            for each in self._open:
                with contextlib.suppress(OSError):
                    each.shutdown(socket.SHUT_RDWR)
                each.close()


def test_a_change_fails_over_to_the_next_server_when_one_cannot_reach_the_cluster(
    redis_server: RedisServer, cluster: Cluster, tmp_path: Path
) -> None:
    from tailhub.daemon import tokens

    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    for index in range(2):
        (cluster.base / f"n{index}").mkdir(mode=0o700, parents=True)
    token, _ = tokens.create_token(cluster.base / "n0", tokens.Role.ADMIN)
    shutil.copy2(cluster.base / "n0" / "tokens.json", cluster.base / "n1" / "tokens.json")
    proxy = _Proxy(redis_server.port)
    try:
        first = cluster.prepare("n0", proxy.url, "--listen", addresses[0], "--insecure")
        first.start()
        cluster.add("n1", "--listen", addresses[1], "--insecure")
        proxy.cut()  # n0 alone has lost Redis
        wait_until(lambda: cluster_health(first) == NOT_SERVING, what="n0 NOT_SERVING")
        targets = targets_from(
            ",".join(addresses),
            token_file=str(write_token(tmp_path, "admin", token)),
            ca_file=None,
            insecure=True,
        )
        with Client.connect_remote(targets) as client:
            assert client.address == addresses[0]  # the first is preferred
            job = client.attach_push("failed over")  # a change, refused by n0 having done nothing
            assert client.address == addresses[1]
        assert cluster.job(job.id, on=cluster.nodes["n1"]).name == "failed over"
    finally:
        proxy.cut()
