"""The web view's server (`tailhubd --http-listen`), over plain HTTP as a browser speaks it:
the login, the session, the headers, the event streams and their limits, the downloads. The
page itself is tested in a real browser elsewhere (test_web_page*)."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import DaemonProcess, one_line, run_cli, wait_until
from remote_helpers import create_token, write_token

from harness.ports import free_port
from tailhub.client import Client

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass
class Web:
    """A daemon serving the web view on 127.0.0.1, and how to reach it."""

    daemon: DaemonProcess
    port: int

    def client(self) -> Client:
        return self.daemon.client()

    def login_url(self, *cli_args: str) -> str:
        made = run_cli(self.daemon.home, *cli_args, "web")
        assert made.returncode == 0, made.stderr
        url = made.stdout.decode().strip()
        assert url.startswith(f"http://127.0.0.1:{self.port}/login?code="), url
        return url

    def request(
        self, path: str, cookie: str | None = None, method: str = "GET", **headers: str
    ) -> tuple[http.client.HTTPResponse, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        if cookie is not None:
            headers["Cookie"] = f"tailhub_session={cookie}"
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response, body

    def login(self, *cli_args: str) -> str:
        """A session cookie's value, as a browser gets it from `tailhub web`'s link."""
        url = urlsplit(self.login_url(*cli_args))
        response, _ = self.request(f"{url.path}?{url.query}")
        assert response.status == 303, response.status
        return cookie_value(response)

    def stream(self, path: str, cookie: str, last_event_id: str | None = None) -> EventStream:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Cookie": f"tailhub_session={cookie}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return EventStream(connection, response)


def cookie_value(response: http.client.HTTPResponse) -> str:
    header = response.getheader("Set-Cookie") or ""
    name, _, rest = header.partition("=")
    assert name == "tailhub_session", header
    return rest.split(";", 1)[0]


@dataclass
class Event:
    name: str
    data: dict[str, object]
    id: str | None


@dataclass
class EventStream:
    """An SSE response read event by event, as an EventSource reads it."""

    connection: http.client.HTTPConnection
    response: http.client.HTTPResponse
    comments: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        return self.response.status

    def events(self) -> Iterator[Event]:
        name, data, event_id = "message", "", None
        while True:
            line = self.response.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text.startswith(":"):
                self.comments.append(text)
            elif text.startswith("event: "):
                name = text[7:]
            elif text.startswith("data: "):
                data = text[6:]
            elif text.startswith("id: "):
                event_id = text[4:]
            elif text == "" and data:
                yield Event(name, json.loads(data), event_id)
                name, data, event_id = "message", "", None

    def close(self) -> None:
        self.connection.close()


def read_log(
    stream: EventStream, until: Callable[[bytes], bool] | None = None
) -> tuple[bytes, str | None, Event | None]:
    """The bytes of `chunk` events, contiguous, until `end` (or `until` holds of the bytes);
    the last id, and the `end` event if one came."""
    got = b""
    offset: int | None = None
    last_id = None
    for item in stream.events():
        if item.name == "chunk":
            start = int(str(item.data["offset"]))
            assert offset is None or start == offset, (start, offset)  # no gap, no repeat
            data = base64.b64decode(str(item.data["data"]))
            got += data
            offset = start + len(data)
            assert item.id == str(offset)
            last_id = item.id
            if until is not None and until(got):
                return got, last_id, None
        elif item.name in ("end", "error"):
            return got, last_id, item
    return got, last_id, None


@pytest.fixture
def web(home: Path, start_daemon: Callable[..., DaemonProcess]) -> Web:
    port = free_port()
    daemon = start_daemon("--http-listen", f"127.0.0.1:{port}", "--http-heartbeat-interval", "0.3")
    return Web(daemon, port)


def push_job(client: Client, data: bytes = b"") -> int:
    job = client.attach_push(name="web")
    if data:
        client.publish(job.id, data)
    return job.id


def test_the_login_code_works_once_and_gives_a_strict_http_only_cookie(web: Web) -> None:
    url = urlsplit(web.login_url())
    first, _ = web.request(f"{url.path}?{url.query}")
    assert first.status == 303
    assert first.getheader("Location") == "/"
    flags = [part.strip().lower() for part in (first.getheader("Set-Cookie") or "").split(";")]
    assert {"httponly", "samesite=strict", "path=/"} <= set(flags), flags
    assert "secure" not in flags  # plain http on loopback: a Secure cookie would never be sent
    again, body = web.request(f"{url.path}?{url.query}")
    assert again.status == 403
    assert b"tailhub web" in body
    cookie = cookie_value(first)
    listed, body = web.request("/api/jobs", cookie)
    assert listed.status == 200
    assert json.loads(body) == {"jobs": [], "total": 0}


def test_without_a_session_pages_and_the_api_answer_401(web: Web) -> None:
    page, body = web.request("/")
    assert page.status == 401
    assert b"Run <code>tailhub web</code>" in body
    api, body = web.request("/api/jobs")
    assert api.status == 401
    assert "tailhub web" in json.loads(body)["error"]
    forged, _ = web.request("/api/jobs", "eyJ2IjoxfQ.AAAA")
    assert forged.status == 401


def test_every_response_carries_the_security_headers_and_only_get_is_served(web: Web) -> None:
    cookie = web.login()
    for path, cookie_sent, status in (
        ("/", cookie, 200),
        ("/api/jobs", cookie, 200),
        ("/api/jobs", None, 401),
        ("/api/jobs/999", cookie, 404),
        ("/login?code=nope", None, 403),
    ):
        response, _ = web.request(path, cookie_sent)
        assert response.status == status, path
        assert response.getheader("Content-Security-Policy") == CSP, path
        assert response.getheader("X-Content-Type-Options") == "nosniff"
        assert response.getheader("Referrer-Policy") == "no-referrer"
    posted, _ = web.request("/api/jobs", cookie, method="POST")
    assert posted.status == 405
    assert posted.getheader("Content-Security-Policy") == CSP
    page, body = web.request("/jobs/1", cookie)
    assert page.getheader("Content-Type", "").startswith("text/html")
    assert b"<script" in body
    assert b"<script>" not in body


def raw_request(port: int, head: bytes) -> bytes:
    """What the web view answers to a request written byte for byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_a_request_for_another_host_is_refused_421(web: Web) -> None:
    cookie = web.login()
    with web.client() as client:
        push_job(client, b"secret\n")
    # DNS rebinding: the attacker's name, resolved to 127.0.0.1, is the request's Host.
    rebound = raw_request(
        web.port,
        f"GET /api/jobs HTTP/1.1\r\nHost: evil.example:{web.port}\r\n"
        f"Cookie: tailhub_session={cookie}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert rebound.startswith(b"HTTP/1.1 421 "), rebound[:100]
    assert b"wrong host" in rebound
    assert b'"jobs"' not in rebound
    # No Host at all (HTTP/1.0): refused too.
    bare = raw_request(web.port, b"GET /static/app.js HTTP/1.0\r\n\r\n")
    assert bare.split(b" ", 2)[1] == b"421", bare[:100]
    for path in ("/", "/static/app.js", "/login?code=x", "/api/events/jobs", "/api/jobs"):
        for host in (f"evil.example:{web.port}", "127.0.0.1", f"127.0.0.1:{web.port + 1}"):
            response, body = web.request(path, cookie, Host=host)
            assert response.status == 421, (path, host)
            assert response.getheader("Content-Security-Policy") == CSP
            assert b"secret" not in body
    # The listener's own names pass.
    for host in (f"127.0.0.1:{web.port}", f"localhost:{web.port}", f"[::1]:{web.port}"):
        response, body = web.request("/api/jobs", cookie, Host=host)
        assert response.status == 200, host
        assert json.loads(body)["total"] == 1


def test_a_job_and_its_events_as_json(web: Web) -> None:
    cookie = web.login()
    with web.client() as client:
        job_id = push_job(client, b"one\n")
        client.finish(job_id, 3)
    response, body = web.request(f"/api/jobs/{job_id}", cookie)
    assert response.status == 200
    job = json.loads(body)["job"]
    assert (job["id"], job["state"], job["exit_code"], job["log_size"], job["source"]) == (
        str(job_id),
        "FAILED",
        3,
        "4",
        "push",
    )
    listed = json.loads(web.request("/api/jobs", cookie)[1])
    assert [each["id"] for each in listed["jobs"]] == [str(job_id)]


def test_the_log_stream_equals_the_log_and_resumes_exactly_across_a_restart(web: Web) -> None:
    cookie = web.login()
    first = b"".join(b"line %d \xe2\x82\xac\n" % n for n in range(200)) + b"partial"
    with web.client() as client:
        job_id = push_job(client, first)
    stream = web.stream(f"/api/events/jobs/{job_id}/log?tail_lines=100000", cookie)
    assert stream.status == 200
    assert stream.response.getheader("Content-Type", "").startswith("text/event-stream")
    got, last_id, end = read_log(stream, until=lambda got: len(got) >= len(first))
    assert end is None
    assert got == first
    web.daemon.restart()  # the stream breaks; the browser comes back with its Last-Event-ID
    stream.close()
    second = b" line\n" + b"after the restart\n" * 50
    with web.client() as client:
        client.publish(job_id, second)
        client.finish(job_id, 0)
    # The session survives the restart (its key is in the home).
    resumed = web.stream(f"/api/events/jobs/{job_id}/log", cookie, last_event_id=last_id)
    rest, _, end = read_log(resumed)
    resumed.close()
    assert got + rest == first + second  # no gap, no repeat
    assert end is not None
    assert end.name == "end"
    assert end.data == {
        "state": "SUCCEEDED",
        "exit_code": 0,
        "reason": end.data["reason"],
        "log_size": str(len(first + second)),
    }


def test_a_stream_starts_at_the_last_tail_lines_lines(web: Web) -> None:
    cookie = web.login()
    with web.client() as client:
        job_id = push_job(client, b"".join(b"%d\n" % n for n in range(10)))
        client.finish(job_id, 0)
    stream = web.stream(f"/api/events/jobs/{job_id}/log?tail_lines=3", cookie)
    got, _, end = read_log(stream)
    stream.close()
    assert got == b"7\n8\n9\n"
    assert end is not None
    assert end.name == "end"
    bad = web.stream(f"/api/events/jobs/{job_id}/log?tail_lines=many", cookie)
    assert [(item.name, "tail_lines" in str(item.data)) for item in bad.events()] == [
        ("error", True)
    ]
    bad.close()


def first_events(stream: EventStream, count: int) -> list[Event]:
    events = []
    for item in stream.events():
        events.append(item)
        if len(events) == count:
            break
    return events


def test_a_stream_opened_at_an_offset_starts_exactly_there(web: Web) -> None:
    cookie = web.login()
    head = b"".join(b"early %d\n" % n for n in range(50))
    with web.client() as client:
        job_id = push_job(client, head)
    path = f"/api/events/jobs/{job_id}/log?tail_lines=1000"
    # Mid-line: a byte offset, not a line's start. The first event says where it starts.
    stream = web.stream(f"{path}&offset=13", cookie)
    [start] = first_events(stream, 1)
    assert (start.name, start.data, start.id) == ("chunk", {"offset": "13", "data": ""}, "13")
    got, _, _ = read_log(stream, until=lambda got: len(got) == len(head) - 13)
    assert got == head[13:]
    # More than tail_lines lines come while the page looks away: none is skipped.
    more = b"".join(b"while hidden %d\n" % n for n in range(3000))
    with web.client() as client:
        client.publish(job_id, more)
        client.finish(job_id, 0)
    rest, _, end = read_log(stream)
    stream.close()
    assert got + rest == head[13:] + more
    assert end is not None
    assert end.name == "end"
    # A tab shown again opens a new stream at its next byte: exactly the bytes after it.
    reopened = web.stream(f"{path}&offset={len(head)}", cookie)
    got, _, end = read_log(reopened)
    reopened.close()
    assert got == more
    assert end is not None
    assert end.name == "end"
    # Last-Event-ID (the browser's own reconnect to the same URL) wins over the query.
    resumed = web.stream(f"{path}&offset=13", cookie, last_event_id=str(len(head) + 100))
    got, _, _ = read_log(resumed)
    resumed.close()
    assert got == more[100:]
    # Refused as a bad Last-Event-ID is: an `error` event, then the end of the stream.
    total = len(head) + len(more)
    for offset, said in (
        (str(total + 1), f"offset {total + 1} is past the end"),
        ("12x", "offset '12x' is not a byte offset"),
        ("-1", "is not a byte offset"),
    ):
        bad = web.stream(f"{path}&offset={offset}", cookie)
        events = list(bad.events())
        bad.close()
        assert [item.name for item in events] == ["error"], offset
        assert said in str(events[0].data["message"]), events[0].data


def read_logs(stream: EventStream) -> tuple[dict[str, bytes], dict[str, int], list[Event]]:
    """A multi-job stream to its close: each job's bytes (contiguous), where each began, and
    the `end`/`error` events."""
    got: dict[str, bytes] = {}
    starts: dict[str, int] = {}
    ends = []
    for item in stream.events():
        job = str(item.data.get("job"))
        if item.name == "chunk":
            offset = int(str(item.data["offset"]))
            if job not in starts:
                starts[job], got[job] = offset, b""
            assert offset == starts[job] + len(got[job]), (job, offset)  # no gap, no repeat
            got[job] += base64.b64decode(str(item.data["data"]))
            assert f"{job}:{starts[job] + len(got[job])}" in str(item.id).split(",")
        elif item.name in ("end", "error"):
            ends.append(item)
    return got, starts, ends


def test_a_multi_job_stream_opened_at_offsets_starts_each_exactly_there(web: Web) -> None:
    cookie = web.login()
    logs: dict[str, bytes] = {}
    with web.client() as client:
        for name in (b"a", b"b", b"c"):
            data = b"".join(b"%s %d\n" % (name, n) for n in range(1500))
            logs[str(push_job(client, data))] = data
    a, b, c = logs
    path = f"/api/events/logs?ids={a},{b},{c}"
    # c is not named in offsets: it starts at its last 1000 lines.
    opened = f"{path}&offsets={a}:5,{b}:{len(logs[b])}"
    stream = web.stream(opened, cookie)
    tail = logs[c].index(b"c 500\n")
    first_id = f"{a}:5,{b}:{len(logs[b])},{c}:{tail}"
    assert [
        (e.name, e.data["job"], e.data["offset"], e.data["data"], e.id)
        for e in first_events(stream, 3)
    ] == [
        ("chunk", a, "5", "", first_id),
        ("chunk", b, str(len(logs[b])), "", first_id),
        ("chunk", c, str(tail), "", first_id),
    ]
    stream.close()
    # More than 1000 lines each while the page looks away: none is skipped.
    more = {job: b"late %s\n" % job.encode() * 2000 for job in logs}
    with web.client() as client:
        for job, data in more.items():
            client.publish(int(job), data)
            client.finish(int(job), 0)
    whole = {job: logs[job] + more[job] for job in logs}
    stream = web.stream(opened, cookie)
    got, starts, ends = read_logs(stream)
    stream.close()
    c_tail = len(whole[c]) - 1000 * len(b"late %s\n" % c.encode())
    assert starts == {a: 5, b: len(logs[b]), c: c_tail}
    assert got == {a: whole[a][5:], b: more[b], c: whole[c][c_tail:]}
    assert [item.name for item in ends] == ["end"] * 3
    # Last-Event-ID (the browser's own reconnect to the same URL) wins over the query.
    stream = web.stream(opened, cookie, last_event_id=f"{a}:7,{b}:9,{c}:11")
    got, starts, _ = read_logs(stream)
    stream.close()
    assert starts == {a: 7, b: 9, c: 11}
    assert got[b] == whole[b][9:]
    # Refused as a bad Last-Event-ID is: an `error` event, then the end of the stream.
    for offsets, said in (
        (f"{a}:{10**9}", f"offset {10**9} is past the end of job {a}'s log"),
        (f"{a}:x", f"offsets '{a}:x' is not JOB:OFFSET"),
        (f"{a}:1,{a}:2", "is not JOB:OFFSET"),
    ):
        bad = web.stream(f"{path}&offsets={offsets}", cookie)
        events = list(bad.events())
        bad.close()
        assert [item.name for item in events] == ["error"], offsets
        assert said in str(events[0].data["message"]), events[0].data


def test_an_idle_stream_gets_heartbeats(web: Web) -> None:
    cookie = web.login()
    with web.client() as client:
        job_id = push_job(client, b"x\n")
    stream = web.stream(f"/api/events/jobs/{job_id}/log", cookie)
    read_log(stream, until=lambda got: got == b"x\n")
    # 0.3 s apart (--http-heartbeat-interval): two come well within a few seconds.
    heartbeats = 0
    while heartbeats < 2:
        line = stream.response.readline()
        assert line, "the stream ended"
        heartbeats += line == b": heartbeat\n"
    stream.close()


def test_twenty_streams_on_one_job_keep_one_upstream_and_end_with_their_tabs(web: Web) -> None:
    cookie = web.login()
    with web.client() as client:
        # A command's output: one upstream, however many follow it.
        job_id = client.attach_command(["sh", "-c", "echo hello; exec sleep 60"]).id
        streams = [web.stream(f"/api/events/jobs/{job_id}/log", cookie) for _ in range(20)]
        for stream in streams:
            assert read_log(stream, until=lambda got: got == b"hello\n")[0] == b"hello\n"
        wait_until(lambda: client.get(job_id).subscribers == 20, 20, "20 followers")
        assert client.get(job_id).upstream_connections == 1
        status = client.status()
        assert (status.upstream_connections, status.upstream_connections_open) == (1, 1)
        for stream in streams:
            stream.close()
        # Each closed tab lets go of its cursor at once (not at the next heartbeat).
        wait_until(lambda: client.get(job_id).subscribers == 0, 20, "the cursors let go")
        assert client.get(job_id).upstream_connections == 1
        client.cancel([job_id])


def test_streams_past_a_limit_are_answered_429(
    home: Path, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    port, grpc_port = free_port(), free_port()
    daemon = start_daemon(
        "--http-listen",
        f"127.0.0.1:{port}",
        "--http-max-streams",
        "3",
        "--http-max-streams-per-session",
        "2",
        "--listen",
        f"127.0.0.1:{grpc_port}",
        "--insecure",
    )
    web = Web(daemon, port)
    owner = web.login()
    token_file = write_token(workdir, "reader", create_token(home, "read", "reader"))
    remote = ("--server", f"127.0.0.1:{grpc_port}", "--insecure", "--token-file", str(token_file))
    reader = web.login(*remote)
    with web.client() as client:
        job_id = push_job(client, b"x\n")
    path = f"/api/events/jobs/{job_id}/log"
    held = [web.stream(path, owner), web.stream("/api/events/jobs", owner)]
    assert [stream.status for stream in held] == [200, 200]
    refused, body = web.request(path, owner)
    assert refused.status == 429
    assert "--http-max-streams-per-session" in json.loads(body)["error"]
    held.append(web.stream(path, reader))
    assert held[-1].status == 200
    refused, body = web.request(path, reader)
    assert refused.status == 429
    assert "--http-max-streams)" in json.loads(body)["error"]
    held.pop().close()

    def opens() -> bool:
        stream = web.stream(path, reader)
        held.append(stream)
        return stream.status == 200

    wait_until(opens, 20, "a place freed")
    for stream in held:
        stream.close()


def test_a_revoked_tokens_session_is_refused(
    home: Path, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    port, grpc_port = free_port(), free_port()
    daemon = start_daemon(
        "--http-listen", f"127.0.0.1:{port}", "--listen", f"127.0.0.1:{grpc_port}", "--insecure"
    )
    web = Web(daemon, port)
    token_file = write_token(workdir, "reader", create_token(home, "read", "reader"))
    remote = ("--server", f"127.0.0.1:{grpc_port}", "--insecure", "--token-file", str(token_file))
    cookie = web.login(*remote)
    assert web.request("/api/jobs", cookie)[0].status == 200
    revoked = run_cli(home, "token", "revoke", "reader")
    assert revoked.returncode == 0, revoked.stderr
    response, body = web.request("/api/jobs", cookie)
    assert response.status == 401
    # A token of the same name made again is another token: the session stays refused.
    create_token(home, "read", "reader")
    assert web.request("/api/jobs", cookie)[0].status == 401


def test_raw_and_gzip_downloads_equal_the_log(web: Web) -> None:
    cookie = web.login()
    log = bytes(range(256)) * 4000 + b"end\n"  # about 1 MiB: several pieces
    with web.client() as client:
        job_id = push_job(client, log)
        client.finish(job_id, 0)
    raw, body = web.request(f"/api/jobs/{job_id}/raw", cookie)
    assert raw.status == 200
    assert body == log
    assert raw.getheader("Content-Disposition") == f'attachment; filename="job-{job_id}.log"'
    packed, body = web.request(f"/api/jobs/{job_id}/raw?gzip=1", cookie)
    assert packed.getheader("Content-Type") == "application/gzip"
    assert gzip.decompress(body) == log


def test_a_non_loopback_web_view_without_tls_is_refused_at_start(home: Path) -> None:
    started = subprocess.run(
        [sys.executable, "-m", "tailhub.daemon", "--home", str(home)]
        + ["--http-listen", f"0.0.0.0:{free_port()}"],
        capture_output=True,
        timeout=60,
    )
    assert started.returncode == 2
    assert "is not a loopback address: the web view needs TLS" in started.stderr.decode()


def test_tailhub_web_without_a_web_view_says_so(daemon: DaemonProcess) -> None:
    made = run_cli(daemon.home, "web")
    assert made.returncode == 1
    line = one_line(made.stderr, "tailhub: ")
    assert "serves no web view" in line
    assert "--http-listen" in line
    assert made.stdout == b""


def test_a_revoked_tokens_busy_stream_ends_and_its_unused_login_link_no_longer_logs_in(
    home: Path, start_daemon: Callable[..., DaemonProcess], workdir: Path
) -> None:
    port, grpc_port = free_port(), free_port()
    daemon = start_daemon(
        "--http-listen",
        f"127.0.0.1:{port}",
        "--http-heartbeat-interval",
        "1",
        "--listen",
        f"127.0.0.1:{grpc_port}",
        "--insecure",
    )
    web = Web(daemon, port)
    token_file = write_token(workdir, "reader", create_token(home, "read", "reader"))
    remote = ("--server", f"127.0.0.1:{grpc_port}", "--insecure", "--token-file", str(token_file))
    cookie = web.login(*remote)
    unused = urlsplit(web.login_url(*remote))
    with web.client() as client:
        # A line every 0.1 s: the stream is never a heartbeat interval (1 s) without a chunk.
        job_id = client.attach_command(["sh", "-c", "while :; do echo tick; sleep 0.1; done"]).id
    stream = web.stream(f"/api/events/jobs/{job_id}/log", cookie)
    feed = web.stream("/api/events/jobs", cookie)
    read_log(stream, until=lambda got: got.count(b"tick") >= 3)
    revoked = run_cli(home, "token", "revoke", "reader")
    assert revoked.returncode == 0, revoked.stderr
    revoked_at = time.monotonic()
    # (Bounded: without the check, a busy stream would never end.)
    _, _, last = read_log(stream, until=lambda _: time.monotonic() - revoked_at > 10)
    ended_after = time.monotonic() - revoked_at
    assert last is not None
    assert (last.name, last.data) == ("error", {"message": "the session has ended"})
    # Within about two intervals (and far sooner than the job, which never ends).
    assert ended_after < 4, ended_after
    assert [item.name for item in feed.events()][-1] == "error"
    stream.close()
    feed.close()
    response, _ = web.request(f"{unused.path}?{unused.query}")
    assert response.status == 403
    assert response.getheader("Set-Cookie") is None
    with web.client() as client:
        client.cancel([job_id])


def test_a_stream_lasts_past_the_request_timeout(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    port = free_port()
    daemon = start_daemon(
        "--http-listen",
        f"127.0.0.1:{port}",
        "--http-request-timeout",
        "0.3",
        "--http-heartbeat-interval",
        "0.3",
    )
    web = Web(daemon, port)
    cookie = web.login()
    with web.client() as client:
        job_id = push_job(client, b"first\n")
        stream = web.stream(f"/api/events/jobs/{job_id}/log", cookie)
        read_log(stream, until=lambda got: got == b"first\n")
        opened = time.monotonic()
        # Ten heartbeats: three seconds, ten request timeouts.
        heartbeats = 0
        while heartbeats < 10:
            line = stream.response.readline()
            assert line, f"the stream was cut after {time.monotonic() - opened:.1f}s"
            heartbeats += line == b": heartbeat\n"
        assert time.monotonic() - opened > 1
        client.publish(job_id, b"second\n")
        assert read_log(stream, until=lambda got: got == b"second\n")[0] == b"second\n"
    stream.close()
