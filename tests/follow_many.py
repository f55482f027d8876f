"""Many followers of one job in one client process, for the fan-out tests.

Run as a script (the tests start it with `start_followers`):

    python follow_many.py ADDRESS JOB_ID COUNT [--hold | --stall]

It opens COUNT `Subscribe` streams from offset 0 at the same moment, over one grpc.aio
channel, as independent clients would. Without `--hold` each stream follows the job to its
end, and the script prints one JSON list with a `FollowerResult` per follower. With `--hold`
it prints `ready` once every stream has received its first message, then waits for a line on
stdin: `cancel` cancels every stream (as a client that gives up does) and prints `cancelled`;
the tests may also simply kill it. With `--stall` it prints `ready` the same way, then reads
nothing more (the streams stay open, unread) until a line on stdin, then follows every stream
to its end and prints the results as without `--hold`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import select
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
# A stalled client's streams keep gRPC's fixed 64 KiB window: with bandwidth probing, grpc
# may grow the window of a fast loopback connection until one stalled stream has taken a whole
# log into its buffers, and then it holds nothing of the daemon's budget (test_budget saw
# that once: the budget never froze, 0 overdrafts).
_STALLED_CHANNEL_OPTIONS = [*_CHANNEL_OPTIONS, ("grpc.http2.bdp_probe", 0)]


@dataclass
class FollowerResult:
    """What one follower received: its bytes (as a digest) and how its stream ended."""

    size: int = 0
    sha256: str = ""
    state: str = ""  # JobState name from the final `end` message, "" if none came
    exit_code: int | None = None
    finished: bool = False
    error: str | None = None  # a gRPC error or a broken offset sequence


# -- the test side ---------------------------------------------------------------------------
def start_followers(
    address: str, job_id: int, count: int, *, hold: bool = False, stall: bool = False
) -> subprocess.Popen[bytes]:
    """Starts a client process with `count` followers of `job_id` on the daemon at `address`."""
    args = [sys.executable, str(Path(__file__)), address, str(job_id), str(count)]
    if hold:
        args.append("--hold")
    if stall:
        args.append("--stall")
    return subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def kill_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """Kills whichever of `processes` still run (a failed test must not leave them behind)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def results_of(process: subprocess.Popen[bytes], timeout: float) -> list[FollowerResult]:
    """Waits for a (non-holding) follower process to end and returns what each follower got."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err.decode(errors="replace")
    return [FollowerResult(**result) for result in json.loads(out)]


def wait_ready(process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Waits until every stream of a holding follower process has received a message."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if readable else b"(nothing within the deadline)"
    if line != b"ready\n":
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"follower process not ready: {line!r} {err.decode()}")


def cancel_held(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Has a holding follower process cancel all its streams, then waits for it to exit."""
    out, err = process.communicate(b"cancel\n", timeout=timeout)
    assert process.returncode == 0, err.decode(errors="replace")
    assert out == b"cancelled\n", out


# -- the client side -------------------------------------------------------------------------
async def _follow(call: Any) -> FollowerResult:
    result = FollowerResult()
    digest = hashlib.sha256()
    try:
        # read(), not `async for`: a stalled follower has read its first message that way,
        # and grpc refuses to mix the two on one call.
        while (message := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
            kind = message.WhichOneof("message")
            if kind == "chunk":
                if message.chunk.offset != result.size:
                    result.error = f"chunk at offset {message.chunk.offset}, expected {result.size}"
                    break
                digest.update(message.chunk.data)
                result.size += len(message.chunk.data)
            elif kind == "end":
                result.state = pb.JobState.Name(message.end.state)
                result.exit_code = (
                    message.end.exit_code if message.end.HasField("exit_code") else None
                )
                result.finished = message.end.finished
    except grpc.aio.AioRpcError as error:
        result.error = f"{error.code().name}: {error.details()}"
    finally:
        call.cancel()
    result.sha256 = digest.hexdigest()
    return result


async def _follow_all(address: str, job_id: int, count: int) -> list[FollowerResult]:
    async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        stub = rpc.TailhubServiceStub(channel)
        request = pb.SubscribeRequest(job_id=job_id, offset=0, follow=True)
        calls = [stub.Subscribe(request, wait_for_ready=True) for _ in range(count)]
        return await asyncio.gather(*(_follow(call) for call in calls))


async def _hold(address: str, job_id: int, count: int) -> None:
    async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        stub = rpc.TailhubServiceStub(channel)
        request = pb.SubscribeRequest(job_id=job_id, offset=0, follow=True)
        calls = [stub.Subscribe(request, wait_for_ready=True) for _ in range(count)]
        await asyncio.gather(*(call.read() for call in calls))
        print("ready", flush=True)
        command = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if command.strip() == "cancel":
            for call in calls:
                call.cancel()
            print("cancelled", flush=True)


async def _stall(address: str, job_id: int, count: int) -> list[FollowerResult]:
    """Followers of a job with no bytes yet that stop reading after their first message (a
    heartbeat) until told to go on: what a stalled client looks like to the daemon."""
    async with grpc.aio.insecure_channel(address, options=_STALLED_CHANNEL_OPTIONS) as channel:
        stub = rpc.TailhubServiceStub(channel)
        request = pb.SubscribeRequest(job_id=job_id, offset=0, follow=True)
        calls = [stub.Subscribe(request, wait_for_ready=True) for _ in range(count)]
        firsts = await asyncio.gather(*(call.read() for call in calls))
        if any(
            isinstance(first, pb.SubscribeResponse) and first.HasField("chunk") for first in firsts
        ):
            raise SystemExit("--stall needs a job without bytes yet")
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        return await asyncio.gather(*(_follow(call) for call in calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("job_id", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--stall", action="store_true")
    args = parser.parse_args()
    if args.hold:
        asyncio.run(_hold(args.address, args.job_id, args.count))
        return
    follow = _stall if args.stall else _follow_all
    results = asyncio.run(follow(args.address, args.job_id, args.count))
    json.dump([asdict(result) for result in results], sys.stdout)


if __name__ == "__main__":
    main()
