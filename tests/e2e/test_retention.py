"""Retention's --max-ended-jobs shared between creators: a token's churn removes its own
oldest ended jobs, never the owner's while the owner holds half the cap or less."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from helpers import DaemonProcess, run_cli, wait_until
from remote_helpers import bearer, create_token, free_port

from tailhub.client import Client
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc


def _ended_push_jobs(address: str, token: str, client: Client, count: int) -> list[int]:
    """`count` push jobs attached and finished with `token`, one after another; their ids."""
    ids = []
    with grpc.insecure_channel(address) as channel:
        stub = rpc.TailhubServiceStub(channel)
        for number in range(count):
            job = stub.AttachJob(
                pb.AttachJobRequest(push=pb.PushSource()), metadata=bearer(token), timeout=10
            ).job
            stub.Publish(
                pb.PublishRequest(job_id=job.id, data=b"line %d\n" % number),
                metadata=bearer(token),
                timeout=10,
            )
            stub.FinishJob(
                pb.FinishJobRequest(job_id=job.id, exit_code=0), metadata=bearer(token), timeout=10
            )
            ids.append(job.id)
            wait_until(lambda: client.get(job.id).state.terminal, 60, "the push job to end")  # noqa: B023
    return ids


@pytest.mark.parametrize(
    ("cap", "mine", "theirs", "mine_kept", "theirs_kept"),
    [
        (10, 3, 30, 3, 7),  # the owner within half the cap: none of its jobs go
        (4, 3, 6, 2, 2),  # over it: both down to their share, the oldest first
    ],
)
def test_a_tokens_churn_past_max_ended_jobs_removes_its_own_jobs_not_the_owners(
    home: Path,
    start_daemon: Callable[..., DaemonProcess],
    cap: int,
    mine: int,
    theirs: int,
    mine_kept: int,
    theirs_kept: int,
) -> None:
    token = create_token(home, "write", "churner")
    address = f"127.0.0.1:{free_port()}"
    daemon = start_daemon("--max-ended-jobs", str(cap), "--listen", address, "--insecure")
    with daemon.client() as client:
        owners = []
        for _ in range(mine):
            job_id = client.launch("echo mine").id
            owners.append(job_id)
            wait_until(lambda: client.get(job_id).state.terminal, 60, "the job to end")  # noqa: B023
        churned = _ended_push_jobs(address, token, client, theirs)
        # The pass runs as jobs end past the cap (a tenth of it, at least one).
        wait_until(lambda: len(client.list()) <= cap, 20, "the cap to be kept")
        kept = {job.id for job in client.list()}
    # Before, the oldest ended jobs went first: all the owner's, whoever churned.
    assert kept == {*owners[mine - mine_kept :], *churned[theirs - theirs_kept :]}, kept
    # The owner still reads its oldest job kept.
    shown = run_cli(home, "jobs", "logs", str(owners[mine - mine_kept]))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == b"mine\n"
