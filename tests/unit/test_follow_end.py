"""How a follower ends its stream (client/_follow.py): at a log's end it reads the stream's
status before it gives the end, so the daemon never sees a stream cancelled after its last
message (grpc.aio keeps ~100 B of native memory for each: issue 16, item 20).

A daemon double answers Subscribe on a socket in a temporary home: a chunk, the end, then the
status a little later, as a busy daemon may send it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from tailhub.client import Client, LogChunk, LogEnd
from tailhub.daemon.paths import StatePaths
from tailhub.v1 import tailhub_pb2 as pb

# Between the end message and the status: long enough that a client which does not wait for
# the status has surely cancelled the stream by then.
_STATUS_DELAY = 0.3


class _Daemon:
    """Subscribe only; records, for each stream, whether its client cancelled it."""

    def __init__(self) -> None:
        self.cancelled: list[bool] = []
        self.lock = threading.Lock()

    def subscribe(
        self, request: pb.SubscribeRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.SubscribeResponse]:
        finished = threading.Event()
        context.add_callback(lambda: self._ended(cancelled=not finished.is_set()))
        yield pb.SubscribeResponse(chunk=pb.Chunk(offset=0, data=b"hi\n"))
        yield pb.SubscribeResponse(
            end=pb.End(state=pb.JOB_STATE_SUCCEEDED, exit_code=0, log_size=3, finished=True)
        )
        time.sleep(_STATUS_DELAY)
        if context.is_active():  # not cancelled meanwhile: the status goes now
            finished.set()

    def _ended(self, *, cancelled: bool) -> None:
        with self.lock:
            self.cancelled.append(cancelled)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[StatePaths, _Daemon]]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    paths = StatePaths(home)
    double = _Daemon()
    server = grpc.server(ThreadPoolExecutor(4))
    handler = grpc.method_handlers_generic_handler(
        "tailhub.v1.TailhubService",
        {
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                double.subscribe,
                request_deserializer=pb.SubscribeRequest.FromString,
                response_serializer=pb.SubscribeResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix:{paths.socket}")
    server.start()
    yield paths, double
    server.stop(None)


def test_a_follower_stopping_at_the_end_leaves_no_stream_cancelled(
    daemon: tuple[StatePaths, _Daemon],
) -> None:
    paths, double = daemon
    with Client(paths) as client:
        for _ in range(3):
            items = []
            for item in client.follow(1):
                items.append(item)
                if isinstance(item, LogEnd):
                    break  # as `jobs launch` and bench/churn.py do
            assert isinstance(items[0], LogChunk)
            assert items[0].data == b"hi\n"
            assert isinstance(items[-1], LogEnd)
    deadline = time.monotonic() + 10
    while len(double.cancelled) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # the double's handlers finish after the status went
    assert double.cancelled == [False, False, False]
