"""What a client without a token can do to a --listen port (issue 16, items 4 and 5): flood it
with HTTP/2 streams it resets at once, or guess tokens. The daemon must stay small and keep
answering token holders, and the guesser must be slowed and seen in the log, in a few lines.

The figures of the rapid reset live in `python -m bench --only rapid_reset`; here only the
user-visible outcome is checked, with loose bounds.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from helpers import DaemonProcess, run_cli, wait_until
from markers import measures
from remote_helpers import bearer, create_token, free_port, status_of, write_token

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
SLOW_OR_SHED = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def _list_jobs(address: str, token: str, timeout: float = 5.0) -> Callable[[], object]:
    def call() -> object:
        with grpc.insecure_channel(address) as channel:
            return rpc.TailhubServiceStub(channel).ListJobs(
                pb.ListJobsRequest(), metadata=bearer(token), timeout=timeout
            )

    return call


def _peak_rss(daemon: DaemonProcess) -> int:
    for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@measures
@pytest.mark.parametrize("connections", [4, 32])
def test_rapid_reset_without_a_token_leaves_the_daemon_small_and_answering(
    home: Path, start_daemon: Callable[..., DaemonProcess], connections: int
) -> None:
    token = create_token(home, "read")
    port = free_port()
    address = f"127.0.0.1:{port}"
    daemon = start_daemon("--listen", address, "--insecure")
    seconds = 5
    with grpc.insecure_channel(address) as channel:
        stub = rpc.TailhubServiceStub(channel)
        stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(token), timeout=10)
        # `with`: a failed call below must not leave the attacker's pipe to the next test.
        with subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.rapid_reset_client", "127.0.0.1", str(port)),
                *(str(connections), str(seconds)),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
        ) as attacker:
            answered: list[float] = []
            refused = 0
            try:
                while attacker.poll() is None:
                    started = time.monotonic()
                    # Before the bounds, no call answered within 10 s while the attack ran.
                    try:
                        stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(token), timeout=5)
                    except grpc.RpcError as error:
                        # One slow answer on a loaded machine counts against the median below,
                        # rather than ending the attack's measurement early. gRPC's core may
                        # also cancel a call it had to queue behind the attacker's (its pending
                        # requests are bounded); a few may be the token holder's.
                        if error.code() not in SLOW_OR_SHED:
                            raise
                        refused += error.code() is grpc.StatusCode.CANCELLED
                    answered.append(time.monotonic() - started)
                out, _ = attacker.communicate(timeout=60)
            finally:
                attacker.kill()
    attack = json.loads(out)
    assert attack["streams"] > 10_000, attack  # the attack did run
    # The token holder's calls go on through the attack (with 1,100 streams a connection:
    # 10-24 a second in bad runs, and answers up to 3.5 s late), on a loaded machine too.
    assert len(answered) >= 5 * seconds, answered
    assert refused <= len(answered) // 10, (refused, len(answered))
    assert sorted(answered)[len(answered) // 2] < 0.25, answered
    # Before the bounds, 4 s of this took the daemon past 600 MiB (1.5 GiB in 15 s); with the
    # bounds but no heap trim (heap_trim.py), 131-189 MiB at 4 connections and 249-298 at 32
    # on a quiet machine; with it, 97-112 and 178-202 (10 s attacks, bench/rapid_reset.py).
    assert _peak_rss(daemon) < (200 if connections <= 4 else 256) * MIB
    # What the flood left free in the C heap goes back to the system (it stayed: 100-317 MiB
    # held after the attack without the trim; 58-81 MiB 5 s after with it, from 49 before).
    wait_until(
        lambda: daemon.rss_bytes() < 128 * MIB, 30, "the daemon's RSS to fall after the attack"
    )
    # Once the core has drained the attacker's queued calls, none is shed.
    wait_until(
        lambda: status_of(_list_jobs(address, token)) is grpc.StatusCode.OK,
        10,
        "a call to answer after the attack",
    )


def test_connections_past_the_cap_are_closed_and_the_owner_still_launches(
    home: Path, workdir: Path
) -> None:
    token = create_token(home, "read")
    port = free_port()
    limit = 256  # an eighth of it, 32 connections, may be open on --listen at once
    daemon = DaemonProcess(
        home,
        args=["--listen", f"127.0.0.1:{port}", "--insecure"],
        prefix=["prlimit", f"--nofile={limit}:{limit}", "--"],
    )
    with daemon:
        held = [_h2_connection(port) for _ in range(100)]
        try:
            wait_until(
                lambda: sum(not _alive(peer) for peer in held) >= 100 - 32,
                10,
                "the connections past the cap to be closed",
            )
            # Those within it stay open (no more closed than the cap asks).
            assert sum(_alive(peer) for peer in held) == 32
            # The operator is told (before, nothing said the listener was full).
            wait_until(
                lambda: (
                    "all 32 connections the --listen ports take are open, from 1 address(es)"
                    in daemon.log_text()
                ),
                10,
                "the daemon to say its listener is full",
            )
            # The owner's launches on the Unix socket do not depend on them.
            task = workdir / "task.yaml"
            task.write_text("run: echo still launching\n")
            launched = run_cli(home, "jobs", "launch", str(task))
            assert launched.returncode == 0, launched.stderr
            assert launched.stdout == b"still launching\n"
            assert daemon.open_fds() < limit - 64
        finally:
            for peer in held:
                peer.close()
        # Once they are gone, a token holder connects and is served.
        wait_until(
            lambda: status_of(_list_jobs(f"127.0.0.1:{port}", token)) is grpc.StatusCode.OK,
            10,
            "a token holder to be served again",
        )


def test_one_address_keeps_only_its_share_of_connections_and_others_get_in(home: Path) -> None:
    token = create_token(home, "read")
    port = free_port()
    daemon = DaemonProcess(
        home,
        args=["--listen", f"127.0.0.1:{port}", "--insecure", "--max-connections-per-peer", "4"],
    )
    with daemon:
        # From another loopback address than the token holder's (127.0.0.1).
        held = [_h2_connection(port, source="127.0.0.2") for _ in range(12)]
        try:
            # Before the cap, all 12 stayed open (they sent the preface: only the idle timeout,
            # 5 min, would end them), and 1,024 such kept every new connection out.
            wait_until(
                lambda: sum(not _alive(peer) for peer in held) >= 8,
                10,
                "the address's connections past its 4 to be closed",
            )
            # Its first four are the ones kept.
            assert [_alive(peer) for peer in held] == [True] * 4 + [False] * 8
            assert status_of(_list_jobs(f"127.0.0.1:{port}", token)) is grpc.StatusCode.OK
        finally:
            for peer in held:
                peer.close()
    # Said once a minute per address, with how many (one check may not have seen all 12).
    assert re.search(
        r"WARNING .*closed [1-8] connection\(s\) from 127\.0\.0\.2 past its 4 on the --listen",
        daemon.log_text(),
    ), daemon.log_text()


def test_connections_that_send_nothing_are_closed_and_a_token_holder_gets_in(home: Path) -> None:
    token = create_token(home, "read")
    port = free_port()
    limit = 256  # 32 connections may be open on --listen at once
    daemon = DaemonProcess(
        home,
        args=["--listen", f"127.0.0.1:{port}", "--insecure"],
        prefix=["prlimit", f"--nofile={limit}:{limit}", "--"],
    )
    with daemon:
        # Every slot taken by a socket that never sends HTTP/2's preface.
        silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(32)]
        for peer in silent:
            peer.setblocking(False)
        try:
            started = time.monotonic()
            assert status_of(_list_jobs(f"127.0.0.1:{port}", token, 2)) is not grpc.StatusCode.OK
            # Token holders got UNAVAILABLE while they were held: 1,024 of them past 150 s
            # under gRPC's default handshake timeout (120 s; here, with 32, keepalive's 30 s
            # closed them). The daemon's is 10 s.
            wait_until(
                lambda: not any(_alive(peer) for peer in silent),
                22,
                "the connections that sent nothing to be closed",
            )
            assert time.monotonic() - started < 22
            assert status_of(_list_jobs(f"127.0.0.1:{port}", token)) is grpc.StatusCode.OK
        finally:
            for peer in silent:
                peer.close()


def _h2_connection(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection from `source` that opened HTTP/2 as a client does, and does nothing
    more."""
    peer = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    peer.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(3) + b"\x04" + bytes(5))
    peer.setblocking(False)
    return peer


def _alive(peer: socket.socket) -> bool:
    """Whether the server keeps the connection open (what it sent is read and dropped)."""
    try:
        while peer.recv(65536):
            pass
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def test_bad_tokens_past_the_limit_are_refused_a_good_one_still_served_and_logged_once(
    home: Path, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    good = create_token(home, "read")
    v4, v6 = f"127.0.0.1:{free_port()}", f"[::1]:{free_port()}"
    daemon = start_daemon("--listen", v4, "--listen", v6, "--insecure")

    codes = Counter(status_of(_list_jobs(v4, f"guess-{n}")) for n in range(100))
    # Twenty failures are allowed at once (one more a second): the rest are refused before
    # their token is looked at.
    assert 20 <= codes[grpc.StatusCode.UNAUTHENTICATED] <= 30, codes
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] >= 70, codes
    assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}

    # Another address is not held back by this one's guesses.
    assert status_of(_list_jobs(v6, good)) is grpc.StatusCode.OK
    # The guesser's own address is refused while it goes on guessing, whatever the token
    # (else a right guess would get through the limit); the CLI says so in one line.
    bad_file = write_token(workdir, "bad", "not-a-token")
    guessing = threading.Event()
    guessing.set()

    def guess() -> None:
        while guessing.is_set():
            status_of(_list_jobs(v4, "guess"))

    guesser = threading.Thread(target=guess)
    guesser.start()
    try:
        refused = run_cli(
            home.parent / "elsewhere", "--server", v4, "--insecure", "--token-file",
            str(bad_file), "jobs", "queue",
        )  # fmt: skip
    finally:
        guessing.clear()
        guesser.join()
    text = refused.stderr.decode()
    assert refused.returncode != 0
    assert text.count("\n") == 1, text
    assert "too many failed authentications from 127.0.0.1: try again in" in text, text
    assert "Traceback" not in text
    # A second after the guessing stops, the address is served again.
    wait_until(
        lambda: status_of(_list_jobs(v4, good)) is grpc.StatusCode.OK,
        10,
        "a good token from the guesser's address to be served again",
    )

    daemon.stop()
    lines = [
        line for line in daemon.log_text().splitlines() if "failed authentication from" in line
    ]
    # The first failure at once, the rest counted in one line (at stop here; else a minute
    # later), not a line per guess.
    assert len(lines) == 2, lines
    assert all(" WARNING " in line and "127.0.0.1" in line for line in lines), lines
    assert "more, and" in lines[1], lines
    assert "calls refused over the limit" in lines[1], lines


def test_oversized_request_lines_on_the_web_view_get_400_and_few_log_lines(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    port = free_port()
    daemon = start_daemon("--http-listen", f"127.0.0.1:{port}")
    for size in range(9_000, 29_000, 1_000):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as peer:
            peer.sendall(b"GET /" + b"a" * size + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert peer.recv(64).startswith(b"HTTP/1.0 400 Bad Request")
    daemon.stop()
    log = daemon.log_text()
    # Each was a traceback of aiohttp's at ERROR; now one line, shown three times, then
    # counted.
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "refused a request from 127.0.0.1" in line]
    assert len(lines) == 4, lines
    assert all(" WARNING " in line and "(LineTooLong)" in line for line in lines), lines
    assert lines[-1].endswith("(repeated 17 more times)"), lines


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream)
        + payload
    )


def _bad_token_call_from(source: str, port: int) -> bool:
    """One ListJobs with a wrong token over raw HTTP/2 from the source address `source` (gRPC's
    channels cannot choose theirs); whether the server answered it (its trailers came)."""

    def literal(name: str, value: str) -> bytes:  # HPACK, without indexing, no Huffman
        return b"\x00" + bytes((len(name),)) + name.encode() + bytes((len(value),)) + value.encode()

    headers = b"".join(
        literal(name, value)
        for name, value in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/tailhub.v1.TailhubService/ListJobs"),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("authorization", "Bearer not-a-token"),
        )
    )
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(source, 0)
    ) as peer:
        peer.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _h2_frame(0x4, 0, 0)  # SETTINGS
            + _h2_frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
            + _h2_frame(0x0, 0x1, 1, bytes(5))  # an empty request message, END_STREAM
        )
        received = b""
        while True:
            while len(received) >= 9:
                size = int.from_bytes(received[:3], "big")
                if len(received) < 9 + size:
                    break
                kind, flags = received[3], received[4]
                stream = int.from_bytes(received[5:9], "big") & 0x7FFFFFFF
                if kind == 0x4 and not flags & 0x1:
                    peer.sendall(_h2_frame(0x4, 0x1, 0))  # SETTINGS ACK
                if kind == 0x1 and stream == 1 and flags & 0x1:
                    return True
                received = received[9 + size :]
            chunk = peer.recv(65536)
            if not chunk:
                return False
            received += chunk


def test_bad_tokens_from_many_addresses_are_logged_in_a_bounded_number_of_lines(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    port = free_port()
    daemon = start_daemon("--listen", f"127.0.0.1:{port}", "--insecure")
    # Every address of 127.0.0.0/8 is this machine's: one guess from each of 300 of them.
    sources = [f"127.0.{n // 250 + 1}.{n % 250 + 1}" for n in range(300)]
    answered = sum(_bad_token_call_from(source, port) for source in sources)
    assert answered == len(sources)
    daemon.stop()
    lines = [line for line in daemon.log_text().splitlines() if "failed authentication" in line]
    # A line per address (and 45,000 addresses rotated the log away in minutes) before; now
    # at most 20 name one in a minute, and one line counts the rest.
    named = [line for line in lines if "failed authentication from 127." in line]
    assert len(named) == 20, lines
    summary = [line for line in lines if "more failed authentications from" in line]
    assert len(lines) == 21, lines
    assert "280 more failed authentications from 280 addresses" in summary[0], summary
