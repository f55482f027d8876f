"""Line filters (SubscribeRequest.grep/exclude, `tailhub jobs logs --grep/--exclude`): the
daemon sends only the matching lines, at the log's own offsets, and resumes exactly."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from helpers import BackgroundCli, DaemonProcess, run_cli, wait_until

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

LOG = (
    b"boot ok\n"
    b"ERROR disk full\r\n"
    b"warn: slow\n"
    b"error: ignore me\n"
    b"\xff\xfe binary ERROR \x00\n"
    b"plain\n"
    b"ERROR last, unterminated"
)


def _matching(log: bytes, keep: Callable[[bytes], bool]) -> list[tuple[int, bytes]]:
    """The log's lines (an unterminated last one too) that `keep` keeps, at their offsets."""
    lines: list[tuple[int, bytes]] = []
    offset = 0
    for part in re.findall(rb"[^\n]*\n|[^\n]+$", log):
        if keep(part.removesuffix(b"\n")):
            lines.append((offset, part))
        offset += len(part)
    return lines


def _keep(line: bytes) -> bool:
    return re.search(rb"(?i)error", line) is not None and b"ignore" not in line


@pytest.fixture
def stub(daemon: DaemonProcess) -> Iterator[rpc.TailhubServiceStub]:
    with grpc.insecure_channel(daemon.paths.address) as channel:
        yield rpc.TailhubServiceStub(channel)


def _push_job(daemon: DaemonProcess, pieces: list[bytes], *, finish: bool = True) -> int:
    with daemon.client() as client:
        job_id = client.attach_push(name="filtered").id
        for piece in pieces:
            client.publish(job_id, piece)
        if finish:
            client.finish(job_id)
    return job_id


def _cut(log: bytes, size: int) -> list[bytes]:
    return [log[start : start + size] for start in range(0, len(log), size)]


def test_a_grpc_follower_with_grep_gets_only_matching_lines_at_their_offsets(
    daemon: DaemonProcess, stub: rpc.TailhubServiceStub
) -> None:
    # Published in pieces of 5 bytes: lines split across appends, and across chunks.
    job_id = _push_job(daemon, _cut(LOG, 5))
    request = pb.SubscribeRequest(
        job_id=job_id, follow=True, grep=["(?i)error"], exclude=["ignore"], timestamps=True
    )
    messages = list(stub.Subscribe(request, timeout=30))
    chunks = [(m.chunk.offset, m.chunk.data) for m in messages if m.HasField("chunk")]
    for offset, data in chunks:
        assert LOG[offset : offset + len(data)] == data, "a chunk is not the log's at its offset"
    expected = _matching(LOG, _keep)
    assert b"".join(data for _, data in chunks) == b"".join(line for _, line in expected)
    # One chunk per run of matching lines, at the log's offsets (the skipped lines between).
    assert [offset for offset, _ in chunks] == [offset for offset, _ in expected] == [8, 53, 77]
    # Every time mark comes before a chunk it dates, none past the last chunk.
    marks = [m.time_mark.offset for m in messages if m.HasField("time_mark")]
    assert marks
    assert max(marks) < chunks[-1][0] + len(chunks[-1][1])
    end = messages[-1]
    assert end.HasField("end")
    assert (end.end.finished, end.end.log_size) == (True, len(LOG))


def test_only_exclude_drops_its_lines_and_keeps_the_rest(
    daemon: DaemonProcess, stub: rpc.TailhubServiceStub
) -> None:
    job_id = _push_job(daemon, [LOG])
    request = pb.SubscribeRequest(job_id=job_id, exclude=["^warn", "binary"])
    data = b"".join(m.chunk.data for m in stub.Subscribe(request, timeout=30) if m.chunk.data)
    assert data == b"".join(
        line for _, line in _matching(LOG, lambda x: not re.search(rb"^warn|binary", x))
    )


@pytest.mark.parametrize(
    ("grep", "named"),
    [(["(unclosed"], "(unclosed"), (["ok", "(?<=x)y"], "(?<=x)y"), (["z" * 1025], "1025 bytes")],
)
def test_a_bad_pattern_is_refused_naming_it(
    daemon: DaemonProcess, stub: rpc.TailhubServiceStub, grep: list[str], named: str
) -> None:
    job_id = _push_job(daemon, [LOG])
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Subscribe(pb.SubscribeRequest(job_id=job_id, grep=grep), timeout=30))
    error = raised.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert named in (error.details() or "")
    # The daemon is unharmed: the same job, unfiltered.
    whole = b"".join(m.chunk.data for m in stub.Subscribe(pb.SubscribeRequest(job_id=job_id)))
    assert whole == LOG


def test_cli_grep_prints_exactly_the_matching_lines(daemon: DaemonProcess) -> None:
    job_id = _push_job(daemon, _cut(LOG, 7))
    shown = run_cli(
        daemon.home, "jobs", "logs", str(job_id), "--grep", "(?i)error", "--exclude", "ignore"
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == b"".join(line for _, line in _matching(LOG, _keep))
    assert shown.stderr == b""


def test_cli_grep_is_repeatable_and_works_on_several_jobs(daemon: DaemonProcess) -> None:
    first = _push_job(daemon, [b"a1\nb1\nc1\n"])
    second = _push_job(daemon, [b"a2\nb2\nc2\n"])
    shown = run_cli(
        daemon.home,
        "jobs",
        "logs",
        "--no-prefix",
        str(first),
        str(second),
        "--grep",
        "^a",
        "--grep",
        "^c",
        "--exclude",
        "2",
    )
    assert shown.returncode == 0, shown.stderr
    assert sorted(shown.stdout.splitlines()) == [b"a1", b"c1"]


def test_cli_bad_pattern_is_one_line_and_exit_code(daemon: DaemonProcess) -> None:
    job_id = _push_job(daemon, [LOG])
    refused = run_cli(daemon.home, "jobs", "logs", str(job_id), "--grep", "a{2000}")
    assert refused.returncode != 0
    text = refused.stderr.decode()
    assert "Traceback" not in text
    assert "a{2000}" in text
    assert text.count("\n") == 1, text


def test_cli_pattern_that_is_not_utf8_is_a_usage_error(daemon: DaemonProcess) -> None:
    job_id = _push_job(daemon, [LOG])
    # "\udcff": the byte 0xff of an argument, as Python hands it over (surrogateescape).
    refused = run_cli(daemon.home, "jobs", "logs", str(job_id), "--grep", "a\udcff")
    assert refused.returncode == 2
    text = refused.stderr.decode()
    assert "Traceback" not in text
    assert "'a\\xff' is not valid UTF-8" in text, text


def test_a_filtered_follow_resumes_across_a_daemon_restart_without_loss_or_repeat(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    job_id = _push_job(daemon, [], finish=False)
    follower = background_cli("jobs", "logs", "-f", str(job_id), "--grep", "keep")
    sent = bytearray()

    def publish(data: bytes) -> None:
        with daemon.client() as client:
            client.publish(job_id, data)
        sent.extend(data)

    publish(b"keep 1\ndrop 1\nkeep 2\nkee")
    expected = b"keep 1\nkeep 2\n"
    follower.wait_for_stdout(expected)
    # Restarted while the follower holds nothing of the unfinished line "kee...".
    daemon.restart()
    publish(b"p 3\ndrop 2\n")
    publish(b"keep 4\n")
    expected += b"keep 3\nkeep 4\n"
    follower.wait_for_stdout(expected)
    with daemon.client() as client:
        client.finish(job_id)
    assert follower.wait() == 0, follower.stderr
    assert follower.stdout == expected


def test_json_output_carries_offsets_times_and_text(daemon: DaemonProcess) -> None:
    before = time.time()
    job_id = _push_job(daemon, _cut(LOG, 9))
    shown = run_cli(daemon.home, "jobs", "logs", str(job_id), "-o", "json", "--grep", "(?i)error")
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(line) for line in shown.stdout.decode().splitlines()]
    expected = _matching(LOG, lambda line: re.search(rb"(?i)error", line) is not None)
    assert [r["offset"] for r in records] == [offset for offset, _ in expected]
    for record, (offset, line) in zip(records, expected, strict=True):
        assert record["job"] == job_id
        assert record["name"] == "filtered"
        assert before - 1 <= record["time"] <= time.time() + 1
        raw = line.removesuffix(b"\n")
        assert record["line"] == raw.decode("utf-8", "replace")
        if "line_b64" in record:
            import base64

            assert base64.b64decode(record["line_b64"]) == raw
        else:
            assert raw.decode("utf-8") == record["line"]
    # The binary line is not UTF-8: its bytes travel in line_b64.
    assert sum("line_b64" in r for r in records) == 1
    # The CRLF line's "\r" stays: the line is its bytes but the "\n".
    assert records[0]["line"] == "ERROR disk full\r"


def test_json_output_follows_several_jobs(
    daemon: DaemonProcess, background_cli: Callable[..., BackgroundCli]
) -> None:
    first = _push_job(daemon, [b"x1\n"], finish=False)
    second = _push_job(daemon, [b"y1\n"], finish=False)
    follower = background_cli("jobs", "logs", "-f", "-o", "json", str(first), str(second))

    def records() -> list[dict[str, object]]:
        return [json.loads(line) for line in follower.stdout.decode().splitlines() if line]

    wait_until(lambda: len(records()) >= 2, 20, "both jobs' first lines")
    with daemon.client() as client:
        client.publish(first, b"x2\n")
        client.finish(first)
        client.finish(second)
    assert follower.wait() == 0, follower.stderr
    got = {(r["job"], r["offset"], r["line"]) for r in records()}
    assert got == {(first, 0, "x1"), (first, 3, "x2"), (second, 0, "y1")}


@pytest.mark.slow
def test_a_pathological_pattern_does_not_hold_other_followers(
    daemon: DaemonProcess, stub: rpc.TailhubServiceStub
) -> None:
    # 16 MiB of 64 KiB lines of "a": `(a+)+$` backtracks exponentially on each in most
    # engines; RE2 takes one pass. Another job's follower must get its log all the same.
    line = b"a" * (64 * 1024 - 1) + b"\n"
    evil_job = _push_job(daemon, [line * 16] * 16, finish=True)
    other_log = b"".join(b"other line %d\n" % index for index in range(50_000))
    other_job = _push_job(daemon, _cut(other_log, 1 << 20))
    matched: list[int] = []

    def evil_follower() -> None:
        request = pb.SubscribeRequest(job_id=evil_job, grep=["(a+)+$"], exclude=["(x+x+)+y"])
        matched.append(sum(len(m.chunk.data) for m in stub.Subscribe(request, timeout=120)))

    threads = [threading.Thread(target=evil_follower) for _ in range(4)]
    for thread in threads:
        thread.start()
    other = b"".join(m.chunk.data for m in stub.Subscribe(pb.SubscribeRequest(job_id=other_job)))
    status = stub.GetDaemonStatus(pb.GetDaemonStatusRequest(), timeout=10)
    for thread in threads:
        thread.join(120)
    assert other == other_log
    assert status.version
    # Every "a" line matches: each filtered follower got the whole log, line by line.
    assert matched == [16 * 16 * len(line)] * 4
