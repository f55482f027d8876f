"""A write token cannot fill the disk through Publish (issue 16): its jobs' logs hold at most
--max-log-bytes-per-token together; a Publish past that is refused, and the owner is not
limited. Before, one write token published until the file system was full."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from helpers import DaemonProcess, run_cli
from remote_helpers import bearer, create_token, free_port

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

KIB = 1024


def _attach(service: rpc.TailhubServiceStub, token: str, name: str) -> int:
    request = pb.AttachJobRequest(name=name, push=pb.PushSource())
    job: pb.Job = service.AttachJob(request, metadata=bearer(token), timeout=10).job
    return job.id


def _publish(service: rpc.TailhubServiceStub, token: str, job_id: int, data: bytes) -> int:
    request = pb.PublishRequest(job_id=job_id, data=data)
    size: int = service.Publish(request, metadata=bearer(token), timeout=10).log_size
    return size


def test_a_tokens_jobs_hold_at_most_their_quota_of_log_bytes(home: Path) -> None:
    writer = create_token(home, "write", "pusher")
    other = create_token(home, "write", "other")
    address = f"127.0.0.1:{free_port()}"
    daemon = DaemonProcess(
        home,
        args=["--listen", address, "--insecure", "--max-log-bytes-per-token", "64K"],
    )
    with daemon, grpc.insecure_channel(address) as channel:
        service = rpc.TailhubServiceStub(channel)
        first = _attach(service, writer, "first")
        second = _attach(service, writer, "second")
        assert _publish(service, writer, first, b"a" * 40 * KIB) == 40 * KIB
        assert _publish(service, writer, second, b"b" * 24 * KIB) == 24 * KIB
        # The next byte of either job is one past the token's 64 KiB.
        with pytest.raises(grpc.RpcError) as refused:
            _publish(service, writer, second, b"c")
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details() == (
            "too many log bytes for this token: it holds 64.0KiB of logs of the 64.0KiB it may "
            "(tailhubd --max-log-bytes-per-token); an admin can remove its ended jobs "
            "(tailhub jobs rm)"
        )
        # Nothing of the refused call was kept.
        with daemon.client() as client:
            assert client.get(second).log_size == 24 * KIB
        # Another token has its own quota; the owner has none.
        third = _attach(service, other, "third")
        assert _publish(service, other, third, b"d" * 64 * KIB) == 64 * KIB
        with daemon.client() as client:
            owners = client.attach_push("owner's")
            client.publish(owners.id, b"e" * 200 * KIB)
        # A write token may publish into the owner's push job: counted as its bytes. Before,
        # a token at its quota published 35 MB into the owner's job.
        with pytest.raises(grpc.RpcError) as refused:
            _publish(service, writer, owners.id, b"f")
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        fourth = create_token(home, "write", "fourth")
        assert _publish(service, fourth, owners.id, b"g" * 60 * KIB) == 260 * KIB
        with pytest.raises(grpc.RpcError) as refused:
            _publish(service, fourth, owners.id, b"g" * 8 * KIB)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        with daemon.client() as client:
            client.finish(owners.id, 0)
            # Once its ended job is removed, the token may publish again.
            client.finish(first, 0)
        removed = run_cli(home, "jobs", "rm", str(first))
        assert removed.returncode == 0, removed.stderr
        assert _publish(service, writer, second, b"c" * 16 * KIB) == 40 * KIB
    # A restart counts what its jobs hold again.
    with daemon, grpc.insecure_channel(address) as channel:
        service = rpc.TailhubServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            _publish(service, writer, second, b"f" * 25 * KIB)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _publish(service, writer, second, b"f" * 24 * KIB) == 64 * KIB
