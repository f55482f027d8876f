"""`tailhub --server A,B,...`: a list of daemons in order of preference (a cluster's). Here two
real standalone daemons on loopback TCP with one token: a daemon that cannot be reached is
skipped, every one dead is one line naming them all, and a follow through the list resumes
byte-exact when its daemon comes back (README "Remote access")."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from conftest import check_daemon_log
from helpers import BackgroundCli, DaemonProcess, run_cli
from remote_helpers import free_port, write_token

from tailhub.client import Client, targets_from


@dataclass
class Pair:
    """Two daemons listening on loopback (plaintext), and one token both accept."""

    first: DaemonProcess
    second: DaemonProcess
    addresses: tuple[str, str]
    token_file: Path
    elsewhere: Path  # where the CLI runs, with no daemon of its own

    def cli(self, servers: str, *args: str, input: bytes | None = None) -> tuple[int, str, str]:
        done = run_cli(
            self.elsewhere,
            "--server",
            servers,
            "--insecure",
            "--token-file",
            str(self.token_file),
            *args,
            input=input,
        )
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    def push_job(self, daemon: DaemonProcess, name: str, data: bytes) -> int:
        """A finished push job on `daemon` (over its own socket) holding `data`."""
        with daemon.client() as client:
            job = client.attach_push(name)
            client.publish(job.id, data)
            client.finish(job.id)
        return job.id


@pytest.fixture
def pair(home: Path, workdir: Path, request: pytest.FixtureRequest) -> Iterator[Pair]:
    from tailhub.daemon import tokens

    addresses = (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    homes = (home, home.parent / "second")
    daemons = [
        DaemonProcess(each, args=["--listen", address, "--insecure"])
        for each, address in zip(homes, addresses, strict=True)
    ]
    try:
        daemons[0].start()
        token, _ = tokens.create_token(home, tokens.Role.ADMIN)
        daemons[1].start()
        # The same token store on both: one token for the whole list, as in a cluster.
        shutil.copy2(home / "tokens.json", homes[1] / "tokens.json")
        yield Pair(
            daemons[0],
            daemons[1],
            addresses,
            write_token(workdir, "admin", token),
            home.parent / "elsewhere",
        )
    finally:
        for daemon in daemons:
            if daemon.running:
                daemon.stop()
        for daemon in daemons:
            check_daemon_log(request, daemon.log_text(), f"the log of daemon {daemon.home}")


def test_the_first_server_is_preferred_and_a_dead_one_is_skipped_for_reads_and_logs(
    pair: Pair,
) -> None:
    job_id = pair.push_job(pair.first, "on-first", b"from the first daemon\n")
    assert pair.push_job(pair.second, "on-second", b"from the second\n") == job_id
    both = ",".join(pair.addresses)

    code, out, err = pair.cli(both, "jobs", "logs", str(job_id))
    assert (code, out) == (0, "from the first daemon\n"), err

    pair.first.kill()
    code, out, err = pair.cli(both, "jobs", "queue", "--all")
    assert code == 0, err
    assert "on-second" in out
    assert "on-first" not in out
    code, out, err = pair.cli(both, "jobs", "logs", str(job_id))
    assert (code, out) == (0, "from the second\n"), err
    # A call that changes something goes on too when the first could not be reached.
    code, out, err = pair.cli(both, "jobs", "attach", "--push", "--name", "after")
    assert code == 0, err
    with pair.second.client() as client:
        assert client.get(int(out)).name == "after"


def test_every_server_dead_is_one_line_naming_each_and_exit_104(pair: Pair) -> None:
    pair.first.kill()
    pair.second.kill()
    code, out, err = pair.cli(",".join(pair.addresses), "jobs", "queue")
    assert code == 104, err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for address in pair.addresses:
        assert address in err, err


def test_a_follow_through_a_list_survives_its_daemon_restarting_byte_exact(
    pair: Pair, background_cli: Callable[..., BackgroundCli]
) -> None:
    with pair.first.client() as client:
        job_id = client.attach_push("restarts").id
    pair.second.kill()  # in the list, and never answering: the follow must come back to first
    follower = background_cli(
        "--home",
        str(pair.elsewhere),
        "--server",
        f"{pair.addresses[1]},{pair.addresses[0]}",
        "--insecure",
        "--token-file",
        str(pair.token_file),
        "jobs",
        "logs",
        str(job_id),
    )
    first = bytes(range(256)) * 64
    with pair.first.client() as client:
        client.publish(job_id, first)
    follower.wait_for_stdout(first)

    pair.first.restart()
    second = b"after the restart\n" * 100
    with pair.first.client() as client:
        client.publish(job_id, second)
        client.finish(job_id)
    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == first + second


def test_a_follow_whose_daemon_dies_resumes_on_the_next_at_the_next_byte(
    pair: Pair, background_cli: Callable[..., BackgroundCli]
) -> None:
    # The same job on both daemons, as a cluster serves it (here: the same bytes pushed to
    # each standalone daemon's job 1).
    first = bytes(range(256)) * 64
    second = b"only the second daemon has this\n" * 100
    with pair.first.client() as on_first, pair.second.client() as on_second:
        job_id = on_first.attach_push("everywhere").id
        assert on_second.attach_push("everywhere").id == job_id
        for client in (on_first, on_second):
            client.publish(job_id, first)
        follower = background_cli(
            "--home",
            str(pair.elsewhere),
            "--server",
            ",".join(pair.addresses),
            "--insecure",
            "--token-file",
            str(pair.token_file),
            "jobs",
            "logs",
            str(job_id),
        )
        follower.wait_for_stdout(first)

        pair.first.kill()
        on_second.publish(job_id, second)
        on_second.finish(job_id)
    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == first + second


def test_the_library_takes_a_list_and_names_every_server_when_none_answers(
    pair: Pair,
) -> None:
    job_id = pair.push_job(pair.second, "library", b"kept\n")
    dead = f"127.0.0.1:{free_port()}"
    targets = targets_from(
        f"{dead},{pair.addresses[1]}", token_file=str(pair.token_file), ca_file=None, insecure=True
    )
    with Client.connect_remote(targets) as client:
        assert client.get(job_id).name == "library"
        assert client.address == pair.addresses[1]
        assert b"".join(getattr(item, "data", b"") for item in client.follow(job_id)) == b"kept\n"

    pair.second.kill()
    from tailhub.client import DaemonUnreachable

    with pytest.raises(DaemonUnreachable) as raised:
        Client.connect_remote(targets)
    assert dead in str(raised.value)
    assert pair.addresses[1] in str(raised.value)


if TYPE_CHECKING:  # generic in the stubs only
    _Handler = grpc.GenericRpcHandler[Any, Any]
else:
    _Handler = grpc.GenericRpcHandler


class _Stopping(_Handler):
    """A peer that takes every call and answers it as a stopping daemon does (UNAVAILABLE):
    the call reached it, so whether it ran is unknown."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method.rsplit("/", 1)[-1]

        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.calls.append(method)
            context.abort(grpc.StatusCode.UNAVAILABLE, "daemon stopping")
            raise AssertionError("abort returns no more")

        if method == "Subscribe":
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.fixture
def stopping() -> Iterator[tuple[str, _Stopping]]:
    handler = _Stopping()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    try:
        yield address, handler
    finally:
        server.stop(None).wait()


def test_a_change_that_reached_a_daemon_is_never_sent_to_the_next_but_a_read_is(
    pair: Pair, stopping: tuple[str, _Stopping], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, peer = stopping
    # The list from the environment, as TAILHUB_SERVER.
    monkeypatch.setenv("TAILHUB_SERVER", f"{address},{pair.addresses[1]}")
    done = run_cli(
        pair.elsewhere,
        "--insecure",
        "--token-file",
        str(pair.token_file),
        "jobs",
        "attach",
        "--push",
    )
    err = done.stderr.decode()
    assert done.returncode == 104, err
    assert address in err
    assert "daemon stopping" in err
    assert peer.calls == ["AttachJob"]
    with pair.second.client() as client:
        assert client.list() == []  # not attached a second time on the next daemon

    queue = run_cli(
        pair.elsewhere, "--insecure", "--token-file", str(pair.token_file), "jobs", "queue"
    )
    assert queue.returncode == 0, queue.stderr
    assert peer.calls == ["AttachJob", "ListJobs"]


@pytest.mark.parametrize(
    ("servers", "said"),
    [
        ("127.0.0.1:1,", "an empty entry"),
        ("127.0.0.1:1,,127.0.0.1:2", "an empty entry"),
        ("127.0.0.1:1,127.0.0.1:1", "lists 127.0.0.1:1 twice"),
        (",".join(f"127.0.0.1:{port}" for port in range(1, 200)), "more than 64"),
    ],
)
def test_a_bad_list_is_one_usage_line(home: Path, servers: str, said: str) -> None:
    done = run_cli(home, "--server", servers, "--insecure", "jobs", "queue")
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert said in err, err
    assert len(err) < 400, err
