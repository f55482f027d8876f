"""A launch runs once per key, however often it is sent (issue: 200 CLIs on a 2-core machine).

A third of 200 concurrent `tailhub jobs launch` gave up on a daemon that answered slowly, and
some of those had launched all the same: a user launching again ran the job twice. Now each
launch carries a key; a LaunchJob sent again with it gets the first call's job, and the CLI
sends it again (same key) while the daemon does not answer, instead of giving up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from cluster_helpers import Cluster
from helpers import BackgroundCli, DaemonProcess, wait_until
from remote_helpers import bearer, create_token, free_port

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

KEY = "0123456789abcdef0123456789abcdef"


@contextmanager
def _service(address: str) -> Iterator[rpc.TailhubServiceStub]:
    channel = grpc.insecure_channel(address)
    try:
        yield rpc.TailhubServiceStub(channel)
    finally:
        channel.close()


def _counting_task(workdir: Path, exit_code: int = 0) -> pb.LaunchJobRequest:
    """A task that adds a line to runs.txt each time it runs (how often it ran)."""
    return pb.LaunchJobRequest(
        name="counted",
        run=f"echo ran >> runs.txt; echo hello; exit {exit_code}",
        workdir=str(workdir),
        envs={"GREETING": "hello"},
        environment={"PATH": os.environ["PATH"], "SHLVL": "1"},
        backend="local",
    )


def _runs(workdir: Path) -> int:
    path = workdir / "runs.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _ended(service: rpc.TailhubServiceStub, job_id: int) -> Callable[[], bool]:
    ended = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
    return lambda: service.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job.state in ended


def _job_count(service: rpc.TailhubServiceStub) -> int:
    return len(service.ListJobs(pb.ListJobsRequest(), timeout=10).jobs)


def test_a_launch_sent_again_with_its_key_gets_its_job_and_runs_once(
    daemon: DaemonProcess, workdir: Path
) -> None:
    request = _counting_task(workdir)
    request.launch_key = KEY
    with _service(daemon.address) as service:
        # Two at once (the second while the first may be under way), then one more.
        calls = [service.LaunchJob.future(request, timeout=30) for _ in range(2)]
        first, second = (call.result().job.id for call in calls)
        third = service.LaunchJob(request, timeout=30).job.id
        assert first == second == third
        wait_until(_ended(service, first), what="the job's end")
        assert service.LaunchJob(request, timeout=30).job.id == first  # ended: the same
        assert _runs(workdir) == 1
        assert _job_count(service) == 1
        # Another key is another launch; no key, every call launches.
        request.launch_key = KEY[::-1]
        other = service.LaunchJob(request, timeout=30).job.id
        request.launch_key = ""
        unkeyed = {service.LaunchJob(request, timeout=30).job.id for _ in range(2)}
        assert len({first, other, *unkeyed}) == 4
        for job_id in (other, *unkeyed):
            wait_until(_ended(service, job_id), what=f"job {job_id}'s end")
        assert _runs(workdir) == 4


def test_the_same_key_from_another_token_is_another_launch(
    start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    daemon = start_daemon("--listen", address, "--insecure")
    alice, bob = create_token(daemon.home, "admin"), create_token(daemon.home, "admin")
    request = _counting_task(workdir)
    request.launch_key = KEY
    with _service(address) as service, _service(daemon.address) as owner:
        alices = service.LaunchJob(request, metadata=bearer(alice), timeout=30).job.id
        bobs = service.LaunchJob(request, metadata=bearer(bob), timeout=30).job.id
        owners = owner.LaunchJob(request, timeout=30).job.id
        assert len({alices, bobs, owners}) == 3  # nobody reaches another's launch by its key
        again = service.LaunchJob(request, metadata=bearer(alice), timeout=30).job.id
        assert again == alices
        for job_id in (alices, bobs, owners):
            wait_until(_ended(owner, job_id), what=f"job {job_id}'s end")
        assert _runs(workdir) == 3


def test_a_key_sent_again_with_another_task_is_refused_naming_its_job(
    daemon: DaemonProcess, workdir: Path
) -> None:
    # It got the first task's job back, silently: its caller believed its own task ran.
    request = _counting_task(workdir)
    request.launch_key = KEY
    other = _counting_task(workdir)
    other.launch_key = KEY
    other.name, other.run = "another", "echo another task"
    with _service(daemon.address) as service:
        # Both at once: the one that came second is refused, while the first is under way.
        calls = [service.LaunchJob.future(task, timeout=30) for task in (request, other)]
        answered, refused = [], []
        for call in calls:
            try:
                answered.append(call.result().job)
            except grpc.RpcError as error:
                refused.append(error)
        assert len(answered) == len(refused) == 1
        [job] = answered
        assert refused[0].code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "another task; give this launch a key of its own" in str(refused[0].details())
        # Once it was made, and again from another shell (its environment differs): the
        # same task gets the same job, another task is refused.
        same, different = (request, other) if job.name == "counted" else (other, request)
        same.environment["SHLVL"] = "2"
        assert service.LaunchJob(same, timeout=30).job.id == job.id
        with pytest.raises(grpc.RpcError) as again:
            service.LaunchJob(different, timeout=30)
        assert again.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"launched job {job.id}, another task" in str(again.value.details())
        wait_until(_ended(service, job.id), what="the job's end")
        assert _job_count(service) == 1


def test_a_launch_key_is_remembered_across_a_daemon_restart(
    daemon: DaemonProcess, workdir: Path
) -> None:
    request = _counting_task(workdir)
    request.launch_key = KEY
    with _service(daemon.address) as service:
        job_id = service.LaunchJob(request, timeout=30).job.id
        wait_until(_ended(service, job_id), what="the job's end")
    daemon.restart()
    request.environment["SHLVL"] = "2"  # (another shell: the same task)
    with _service(daemon.address) as service:
        answer = service.LaunchJob(request, timeout=30).job
        assert answer.id == job_id
        assert answer.state == pb.JOB_STATE_SUCCEEDED
        assert _job_count(service) == 1
    assert _runs(workdir) == 1


@pytest.mark.parametrize(
    "key",
    [
        "short",
        "x" * 65,
        "spaces are not a key at all",
        "0123456789abcdef/..",
        "ключ-ключ-ключ-ключ",
        "0123456789abcdef\n",
    ],
)
def test_a_malformed_launch_key_is_refused_and_nothing_is_launched(
    daemon: DaemonProcess, workdir: Path, key: str
) -> None:
    request = _counting_task(workdir)
    request.launch_key = key
    with _service(daemon.address) as service:
        with pytest.raises(grpc.RpcError) as refused:
            service.LaunchJob(request, timeout=30)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "launch_key must be 16-64 characters" in (refused.value.details() or "")
        assert key not in (refused.value.details() or "")  # (never echoed)
        # The owner endpoint (the CLI's lean path) refuses it the same way.
        status, answer = _post_launch(daemon.home, {"run": "echo hi", "launch_key": key})
        assert status == 400, answer
        assert _job_count(service) == 0


def test_the_owner_endpoint_launches_once_per_key_too(daemon: DaemonProcess, workdir: Path) -> None:
    request = _counting_task(workdir)
    request.launch_key = KEY
    fields = {
        "name": request.name,
        "run": request.run,
        "workdir": request.workdir,
        "envs": dict(request.envs),
        "environment": dict(request.environment),
        "launch_key": KEY,
    }
    answers = [_post_launch(daemon.home, fields) for _ in range(2)]
    assert [status for status, _ in answers] == [200, 200]
    first, second = (answer["job"]["id"] for _, answer in answers)
    assert first == second
    with _service(daemon.address) as service:
        # The owner's key is the same on both of the owner's ways in.
        assert service.LaunchJob(request, timeout=30).job.id == first
        wait_until(_ended(service, first), what="the job's end")
        assert _job_count(service) == 1
    assert _runs(workdir) == 1


@pytest.mark.parametrize("path", ["grpc", "lean"])
def test_a_cli_launch_waits_out_a_frozen_daemon_and_launches_once(
    daemon: DaemonProcess,
    workdir: Path,
    background_cli: Callable[..., BackgroundCli],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    task = workdir / "task.yaml"
    task.write_text(f"workdir: {workdir}\nrun: |\n  echo ran >> runs.txt\n  echo hello\n  exit 3\n")
    monkeypatch.setenv("TAILHUB_CALL_TIMEOUT", "1")  # (the default, 30 s, is too long here)
    monkeypatch.setenv("TAILHUB_LEAN", "0" if path == "grpc" else "1")
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        cli = background_cli("jobs", "launch", str(task))
        # Past the first call's deadline, and a few calls more, while the daemon is frozen.
        wait_until(
            lambda: "still waiting" in cli.stderr or cli.process.poll() is not None,
            timeout=30,
            what="the CLI saying it waits",
        )
        assert cli.process.poll() is None, cli.stderr
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert cli.wait(60) == 100, cli.stderr  # the job's end, as the CLI says a failed job's
    assert cli.stdout == b"hello\n"
    assert "job 1 failed: run exited with 3" in cli.stderr
    assert cli.stderr.count("the daemon is slow to answer; still waiting") == 1, cli.stderr
    assert "Traceback" not in cli.stderr
    with _service(daemon.address) as service:
        assert _job_count(service) == 1
    assert _runs(workdir) == 1


def test_a_cli_launch_that_gives_up_says_the_job_may_be_launched_and_its_key_gets_it(
    daemon: DaemonProcess,
    workdir: Path,
    background_cli: Callable[..., BackgroundCli],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = workdir / "task.yaml"
    task.write_text(f"workdir: {workdir}\nrun: |\n  echo ran >> runs.txt\n  echo hello\n")
    monkeypatch.setenv("TAILHUB_CALL_TIMEOUT", "1")
    monkeypatch.setenv("TAILHUB_LAUNCH_PATIENCE", "2")
    monkeypatch.setenv("TAILHUB_LEAN", "0")
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        cli = background_cli("jobs", "launch", str(task))
        assert cli.wait(60) == 104, cli.stderr
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    lines = cli.stderr.strip().splitlines()
    assert lines[0] == "tailhub: the daemon is slow to answer; still waiting", cli.stderr
    assert len(lines) == 2, cli.stderr
    assert "the job may have been launched all the same (see `tailhub jobs queue`)" in lines[1]
    key = lines[1].rsplit("--launch-key ", 1)[1]
    # Its key, given again, follows the job its calls made (if they made one), never a second.
    monkeypatch.delenv("TAILHUB_LAUNCH_PATIENCE")
    monkeypatch.setenv("TAILHUB_CALL_TIMEOUT", "30")
    again = background_cli("jobs", "launch", "--launch-key", key, str(task))
    assert again.wait(60) == 0, again.stderr
    assert again.stdout == b"hello\n"
    with _service(daemon.address) as service:
        assert _job_count(service) == 1
    assert _runs(workdir) == 1


def test_a_cluster_node_launches_once_per_key(cluster: Cluster, workdir: Path) -> None:
    # The key stays on the node that took the call (never in Redis): the client calls again
    # on the same node.
    node = cluster.start(2)[0]
    request = _counting_task(workdir)
    request.launch_key = KEY
    with _service(node.address) as service:
        first = service.LaunchJob(request, timeout=30).job.id
        assert service.LaunchJob(request, timeout=30).job.id == first
        wait_until(_ended(service, first), what="the job's end")
        assert service.LaunchJob(request, timeout=30).job.id == first
        assert _job_count(service) == 1
    assert _runs(workdir) == 1


def _post_launch(home: Path, fields: Mapping[str, object]) -> tuple[int, Any]:
    """POST /v1/jobs on the owner endpoint (the lean path's launch): status and JSON answer."""
    body = json.dumps(fields).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(home / "owner.sock"))
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: tailhub\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(payload)
