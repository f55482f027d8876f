"""Retention's --max-ended-jobs shared between creators: a token's churn removes its own
oldest ended jobs, never the owner's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
from helpers import DaemonProcess, run_cli, wait_until
from remote_helpers import bearer, create_token, free_port

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc


def test_a_tokens_churn_past_max_ended_jobs_removes_its_own_jobs_not_the_owners(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    token = create_token(home, "write", "churner")
    address = f"127.0.0.1:{free_port()}"
    daemon = start_daemon("--max-ended-jobs", "10", "--listen", address, "--insecure")
    with daemon.client() as client:
        owners = []
        for _ in range(3):
            job_id = client.launch("echo mine").id
            owners.append(job_id)
            wait_until(lambda: client.get(job_id).state.terminal, 60, "the job to end")  # noqa: B023
        churned = []
        with grpc.insecure_channel(address) as channel:
            stub = rpc.TailhubServiceStub(channel)
            for number in range(30):
                job = stub.AttachJob(
                    pb.AttachJobRequest(push=pb.PushSource()), metadata=bearer(token), timeout=10
                ).job
                stub.Publish(
                    pb.PublishRequest(job_id=job.id, data=b"line %d\n" % number),
                    metadata=bearer(token),
                    timeout=10,
                )
                stub.FinishJob(
                    pb.FinishJobRequest(job_id=job.id, exit_code=0),
                    metadata=bearer(token),
                    timeout=10,
                )
                churned.append(job.id)
                wait_until(lambda: client.get(job.id).state.terminal, 60, "the push job to end")  # noqa: B023
        # The pass runs as jobs end past the cap (a tenth of 10: at each one).
        wait_until(lambda: len(client.list()) <= 10, 20, "the cap to be kept")
        kept = {job.id for job in client.list()}
    # Before, the oldest ended jobs went first: the owner's three, whoever churned.
    assert set(owners) <= kept, kept
    assert kept - set(owners) == set(churned[-7:]), kept
    # The owner still reads its first job's log.
    shown = run_cli(home, "jobs", "logs", str(owners[0]))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == b"mine\n"
