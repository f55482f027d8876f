"""Inputs are bounded at the API edge; job lists come in pages; ended jobs can be removed."""

from __future__ import annotations

import concurrent.futures
import functools
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import DaemonProcess, run_cli, wait_until

from tailhub.client import Client, InvalidRequestError, JobState
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc


@pytest.fixture
def stub(daemon: DaemonProcess) -> Iterator[rpc.TailhubServiceStub]:
    """The raw gRPC stub: requests no client library would build."""
    with grpc.insecure_channel(daemon.paths.address) as channel:
        yield rpc.TailhubServiceStub(channel)


def _refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = raised.value
    assert isinstance(error, grpc.RpcError)
    return error


def _push_jobs(client: Client, count: int, name: str = "") -> list[int]:
    return [client.attach_push(name or f"job-{index}").id for index in range(count)]


def test_env_key_with_equals_sign_is_refused_naming_envs_and_the_daemon_restarts(
    daemon: DaemonProcess, stub: rpc.TailhubServiceStub, workdir: Path
) -> None:
    request = pb.LaunchJobRequest(run="echo hi", workdir=str(workdir), envs={"A=B": "1"})

    error = _refusal(lambda: stub.LaunchJob(request))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "envs" in (error.details() or "")
    assert "'A=B'" in (error.details() or "")
    with daemon.client() as client:
        assert client.list() == [], "a refused launch left a job behind"
    daemon.restart()
    with daemon.client() as client:
        assert client.status().jobs == 0


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AttachJobRequest(name="a\0b", push=pb.PushSource()), "name"),
        (pb.AttachJobRequest(name="n" * 257, push=pb.PushSource()), "name"),
        # Bytes, not characters: 100 three-byte characters are 300 bytes.
        (pb.AttachJobRequest(name="€" * 100, push=pb.PushSource()), "name"),
        (pb.AttachJobRequest(file=pb.FileSource(path="/tmp/a\0b")), "file.path"),
        (pb.AttachJobRequest(file=pb.FileSource(path="/" + "p" * 4096)), "file.path"),
        (pb.AttachJobRequest(command=pb.CommandSource(argv=["echo", "a\0b"])), "command.argv[1]"),
        (pb.AttachJobRequest(command=pb.CommandSource(argv=["true"] * 1025)), "command.argv"),
        (
            pb.AttachJobRequest(command=pb.CommandSource(argv=["echo", "x" * 300 * 1024])),
            "command.argv",
        ),
        (
            pb.AttachJobRequest(
                command=pb.CommandSource(argv=["true"], transport_exit_codes=[256])
            ),
            "command.transport_exit_codes",
        ),
        (pb.LaunchJobRequest(run="echo\0hi"), "run"),
        (pb.LaunchJobRequest(run="true", setup="x" * (1024 * 1024)), "run and setup"),
        (pb.LaunchJobRequest(run="true", workdir="/tmp/\0"), "workdir"),
        (pb.LaunchJobRequest(run="true", envs={"1X": "v"}), "envs"),
        (pb.LaunchJobRequest(run="true", envs={"X": "a\0b"}), "envs.X"),
        (pb.LaunchJobRequest(run="true", envs={"X": "v" * (128 * 1024 + 1)}), "envs.X"),
        (pb.LaunchJobRequest(run="true", environment={"": "v"}), "environment"),
        (
            pb.LaunchJobRequest(
                run="true", environment={f"V{i}": "v" * 100 * 1024 for i in range(11)}
            ),
            "environment and envs",
        ),
        (pb.LaunchJobRequest(run="true", backend="b" * 64 * 1024), "backend"),
        (pb.LaunchJobRequest(run="true", backend="local\0"), "backend"),
        (
            pb.LaunchJobRequest(run="true", environment={f"V{i}": "" for i in range(8193)}),
            "environment and envs",
        ),
        (pb.CancelJobsRequest(job_ids=range(1, 10_002)), "job_ids"),
        (pb.RemoveJobsRequest(job_ids=range(1, 10_002)), "job_ids"),
        (pb.ListJobsRequest(page_token="not-a-token"), "page_token"),
    ],
)
def test_out_of_bounds_requests_are_invalid_argument_naming_the_field(
    daemon: DaemonProcess, stub: rpc.TailhubServiceStub, request_: object, field: str
) -> None:
    method: Any = {
        pb.AttachJobRequest: stub.AttachJob,
        pb.LaunchJobRequest: stub.LaunchJob,
        pb.CancelJobsRequest: stub.CancelJobs,
        pb.RemoveJobsRequest: stub.RemoveJobs,
        pb.ListJobsRequest: stub.ListJobs,
    }[type(request_)]

    error = _refusal(lambda: method(request_))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert (error.details() or "").startswith(field), error.details()
    assert len(error.details() or "") < 300, "an error must not echo a huge value back"
    with daemon.client() as client:
        assert client.list() == []


def test_a_publish_of_the_documented_maximum_is_stored_and_a_larger_one_is_not_disk_full(
    daemon: DaemonProcess, stub: rpc.TailhubServiceStub
) -> None:
    maximum = 4 * 1024 * 1024
    with daemon.client() as client:
        job_id = client.attach_push().id
        assert client.publish(job_id, b"x" * maximum) == maximum

        over = _refusal(
            lambda: stub.Publish(pb.PublishRequest(job_id=job_id, data=b"y" * (maximum + 1)))
        )
        assert over.code() is grpc.StatusCode.INVALID_ARGUMENT, over.details()
        assert "at most 4194304" in (over.details() or "")

        # Past the transport's limit: refused once, as too large, never as a full disk.
        with pytest.raises(InvalidRequestError, match="too large"):
            client.publish(job_id, b"z" * (6 * 1024 * 1024))
        assert client.get(job_id).log_size == maximum


def test_finish_takes_an_exit_code_and_a_bounded_reason(
    daemon: DaemonProcess, stub: rpc.TailhubServiceStub
) -> None:
    with daemon.client() as client:
        job_id = client.attach_push().id

    requests = [
        (pb.FinishJobRequest(job_id=job_id, exit_code=-1), "exit_code"),
        (pb.FinishJobRequest(job_id=job_id, reason="r" * 4097), "reason"),
        (pb.FinishJobRequest(job_id=job_id, reason="\0"), "reason"),
    ]
    for request, field in requests:
        error = _refusal(functools.partial(stub.FinishJob, request))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith(field), error.details()
    with daemon.client() as client:
        assert client.get(job_id).state is JobState.RUNNING


def test_a_pending_job_that_cannot_start_fails_alone_and_never_blocks_a_daemon_start(
    daemon: DaemonProcess, workdir: Path
) -> None:
    # A job the API would refuse today, recorded by an older daemon: its environment has a
    # name the operating system rejects.
    daemon.stop()
    spec = {"kind": "local", "run": "echo hi", "setup": "", "workdir": str(workdir)}
    spec["envs"] = [["A=B", "1"]]  # type: ignore[assignment]
    with sqlite3.connect(daemon.paths.database) as db:
        db.execute(
            "INSERT INTO jobs (name, spec, state, submitted_at) VALUES (?, ?, 'PENDING', 0)",
            ("planted", json.dumps(spec)),
        )
    db.close()

    daemon.start()

    with daemon.client() as client:
        (bad,) = client.list()
        assert bad.state is JobState.FAILED
        assert bad.reason.startswith("cannot start the job")
        good = client.launch("echo fine", workdir=str(workdir))
        wait_until(lambda: client.get(good.id).sealed, what="a good job to end")
        assert client.get(good.id).state is JobState.SUCCEEDED
    daemon.restart()


def test_queue_shows_the_newest_50_and_all_pages_with_all(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        ids = _push_jobs(client, 120)
        finished = ids[10]
        client.finish(finished)

        page = client.list_page(7)
        assert [job.id for job in page.jobs] == ids[::-1][:7]
        assert page.total_jobs == 120
        seen = [job.id for job in page.jobs]
        while page.next_page_token:
            page = client.list_page(7, page.next_page_token)
            seen += [job.id for job in page.jobs]
        assert seen == ids[::-1], "paging lost, repeated or reordered jobs"
        assert len(client.list_page(5000).jobs) == 120
        assert [job.id for job in client.list(limit=3)] == ids[::-1][:3]
        with pytest.raises(InvalidRequestError):
            client.list_page(10, "bogus")

    queue = run_cli(daemon.home, "jobs", "queue")
    assert queue.returncode == 0, queue.stderr
    rows = queue.stdout.decode().splitlines()[1:]
    assert [int(row.split()[0]) for row in rows] == ids[::-1][:50]
    assert queue.stderr.decode() == (
        "tailhub: showing the newest 50 of 120 jobs; --all for every one\n"
    )
    everything = run_cli(daemon.home, "jobs", "queue", "--all", "--json")
    assert everything.returncode == 0, everything.stderr
    assert [job["id"] for job in json.loads(everything.stdout)] == ids[::-1]
    assert everything.stderr == b""

    cancelled = run_cli(daemon.home, "jobs", "cancel", "--all")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stderr.decode().count(": CANCELLED\n") == 119
    with daemon.client() as client:
        states = {job.id: job.state for job in client.list()}
    assert states.pop(finished) is JobState.SUCCEEDED
    assert set(states.values()) == {JobState.CANCELLED}


def test_rm_deletes_the_job_and_its_log_and_reports_each_id(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        ended, running = _push_jobs(client, 2)
        client.publish(ended, b"some bytes\n")
        client.finish(ended)
    log = daemon.paths.job_log(ended)
    assert log.exists()

    removed = run_cli(daemon.home, "jobs", "rm", str(ended))

    assert removed.returncode == 0, removed.stderr
    assert removed.stderr.decode() == f"tailhub: job {ended} removed\n"
    assert not log.exists()
    queue = run_cli(daemon.home, "jobs", "queue", "--json")
    assert [job["id"] for job in json.loads(queue.stdout)] == [running]
    logs = run_cli(daemon.home, "jobs", "logs", str(ended))
    assert logs.returncode == 102
    assert logs.stderr.decode() == f"tailhub: job {ended} not found\n"

    not_ended = run_cli(daemon.home, "jobs", "rm", str(running))
    assert not_ended.returncode == 1
    assert not_ended.stderr.decode() == f"tailhub: job {running} has not ended; cancel it first\n"
    mixed = run_cli(daemon.home, "jobs", "rm", str(running), str(ended))
    assert mixed.returncode == 102
    assert mixed.stderr.decode() == (
        f"tailhub: job {ended} not found\ntailhub: job {running} has not ended; cancel it first\n"
    )
    # Ids are never reused: a new job does not inherit the removed one's id (or log).
    with daemon.client() as client:
        assert client.attach_push().id > running
    daemon.restart()
    with daemon.client() as client:
        assert ended not in {job.id for job in client.list()}


def test_prune_removes_only_jobs_that_ended_longer_ago(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        ended, running = _push_jobs(client, 2)
        client.finish(ended, 3)

    kept = run_cli(daemon.home, "jobs", "prune", "--older-than", "1h")
    assert kept.returncode == 0, kept.stderr
    assert kept.stderr.decode() == "tailhub: removed 0 jobs (0B of logs)\n"

    pruned = run_cli(daemon.home, "jobs", "prune", "--older-than", "0s")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stderr.decode() == "tailhub: removed 1 job (0B of logs)\n"
    with daemon.client() as client:
        assert [job.id for job in client.list()] == [running]

    bad = run_cli(daemon.home, "jobs", "prune", "--older-than", "soon")
    assert bad.returncode == 2
    assert "is not a duration" in bad.stderr.decode()


def test_retention_removes_old_and_surplus_ended_jobs_at_start(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        ids = _push_jobs(client, 5)
        for job_id in ids[:4]:
            client.finish(job_id)
    daemon.stop()

    daemon = start_daemon("--max-ended-jobs", "2")
    with daemon.client() as client:
        wait_until(lambda: len(client.list()) == 3, what="the oldest ended jobs to go")
        assert [job.id for job in client.list()] == [ids[4], ids[3], ids[2]]
        assert not daemon.paths.job_log(ids[0]).exists()
    daemon.stop()

    daemon = start_daemon("--retention", "0.001s")
    with daemon.client() as client:
        wait_until(lambda: len(client.list()) == 1, what="expired jobs to go")
        assert [job.id for job in client.list()] == [ids[4]], "a running job was removed"


def test_a_follower_of_a_removed_job_gets_a_clean_end_or_not_found(
    daemon: DaemonProcess, stub: rpc.TailhubServiceStub
) -> None:
    data = bytes(range(256)) * 4096 * 16  # 16 MiB: far more than one message
    with daemon.client() as client:
        job_id = client.attach_push().id
        for start in range(0, len(data), 1024 * 1024):
            client.publish(job_id, data[start : start + 1024 * 1024])
        client.finish(job_id)
        stream = stub.Subscribe(pb.SubscribeRequest(job_id=job_id, offset=0, follow=True))
        received = bytearray(next(iter(stream)).chunk.data)

        assert client.remove([job_id]).removed_job_ids == [job_id]

        ending: object = None
        try:
            for message in stream:
                received += message.chunk.data
                if message.HasField("end"):
                    ending = pb.JobState.Name(message.end.state)
        except grpc.RpcError as error:
            ending = error.code()
        assert ending in ("JOB_STATE_SUCCEEDED", grpc.StatusCode.NOT_FOUND)
        assert bytes(received) == data[: len(received)]
        if ending == "JOB_STATE_SUCCEEDED":
            assert bytes(received) == data
        assert client.status().jobs == 0
    assert "Traceback" not in daemon.log_text()


def test_rm_racing_tail_and_since_subscribers_gives_each_a_clean_end_or_not_found(
    daemon: DaemonProcess, stub: rpc.TailhubServiceStub
) -> None:
    with daemon.client() as client:
        job_ids = []
        for _ in range(12):
            job_id = client.attach_push().id
            # No newline: a --tail scan reads all of it, so scans queue up behind each other.
            client.publish(job_id, b"x" * 2 * 1024 * 1024)
            client.finish(job_id)
            job_ids.append(job_id)

    def follow(request: pb.SubscribeRequest) -> object:
        try:
            for message in stub.Subscribe(request):
                if message.HasField("end"):
                    return "end"
        except grpc.RpcError as error:
            return error.code()
        return "closed"

    requests = [
        pb.SubscribeRequest(job_id=job_id, follow=True, **start)
        for job_id in job_ids
        for start in ({"tail_lines": 10}, {"tail_lines": 5}, {"since_time": 1.0})
    ]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        running = pool.map(follow, requests)
        with daemon.client() as client:
            # Removed while subscriptions start, scan or stream.
            assert sorted(client.remove(job_ids).removed_job_ids) == job_ids
        assert set(running) <= {"end", grpc.StatusCode.NOT_FOUND}
    assert "Traceback" not in daemon.log_text()


def test_a_page_of_large_jobs_ends_early_and_the_rest_follows(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        ids = _push_jobs(client, 600, name="n" * 256)
        for job_id in ids:
            client.finish(job_id, 1, "why " * 1000)  # a 4000-byte reason each

        page = client.list_page(1000)

        assert 0 < len(page.jobs) < 600, "a page grew with its jobs' size"
        assert page.next_page_token
        assert [job.id for job in client.list()] == ids[::-1]


def test_a_launch_environment_with_exported_shell_functions_is_accepted(
    daemon: DaemonProcess, workdir: Path
) -> None:
    # Lmod and other tools export bash functions (`BASH_FUNC_module%%`): a CLI launched from
    # such a shell sends them in its environment and must still launch.
    environment = {"PATH": "/usr/bin:/bin", "BASH_FUNC_module%%": "() {  echo module\n}"}
    with daemon.client() as client:
        job = client.launch(
            'echo "ok $TASK_VAR"',
            workdir=str(workdir),
            envs={"TASK_VAR": "1"},
            environment=environment,
        )
        wait_until(lambda: client.get(job.id).state.terminal, what="the job to end")
        assert client.get(job.id).state is JobState.SUCCEEDED
        data = b"".join(item.data for item in client.follow(job.id) if hasattr(item, "data"))
    assert data == b"ok 1\n"
