"""Fair shares of the send budget (issue 19, item 2): a client whose streams stopped reading
holds its own share of the daemon's budget, never another client's, so another token's
follower catches up in full chunks beside it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from helpers import DaemonProcess, wait_until
from remote_helpers import bearer, create_token, free_port

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

KIB = 1024
MIB = 1024 * KIB
BUDGET = 1 * MIB
LOG = 16 * MIB
UNREAD = 20
# Without bandwidth probing a stream's window stays at 64 KiB: an unread stream holds what it
# was granted instead of taking the log into its client's buffers (follow_many.py).
FIXED_WINDOWS = [("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 16 * MIB)]


def _quiet(served: Callable[[], int], timeout: float = 60.0) -> None:
    """Waits until `served` stays the same over a second: the unread streams hold what they
    were sent, and take nothing more."""
    last = [served(), time.monotonic()]

    def still() -> bool:
        now = served()
        if now != last[0]:
            last[:] = [now, time.monotonic()]
            return False
        return time.monotonic() - last[1] >= 1.0

    wait_until(still, timeout, "the unread streams to stop taking bytes")


def _read_all(address: str, token: str, job_id: int) -> tuple[bytes, int]:
    """A follower's catch-up from offset 0 to the end: the bytes, and in how many messages."""
    data = bytearray()
    messages = 0
    with grpc.insecure_channel(address, options=FIXED_WINDOWS) as channel:
        stream = rpc.TailhubServiceStub(channel).Subscribe(
            pb.SubscribeRequest(job_id=job_id, follow=True), metadata=bearer(token), timeout=120
        )
        for message in stream:
            if message.HasField("chunk"):
                assert message.chunk.offset == len(data)
                data += message.chunk.data
                messages += 1
            elif message.HasField("end"):
                break
    return bytes(data), messages


def test_another_clients_unread_streams_do_not_cut_a_followers_catch_up_to_pieces(
    home: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    hog = create_token(home, "read", "hog")
    reader = create_token(home, "read", "reader")
    address = f"127.0.0.1:{free_port()}"
    daemon = start_daemon("--listen", address, "--insecure", "--subscriber-budget", str(BUDGET))
    data = os.urandom(LOG)
    with daemon.client() as client:
        job = client.attach_push(name="big")
        for start in range(0, LOG, MIB):
            client.publish(job.id, data[start : start + MIB])
        client.finish(job.id, 0)
        # A --listen connection carries at most 8 streams: one connection per stream (a
        # subchannel pool of its own each), as a client that needs many would open.
        own = [*FIXED_WINDOWS, ("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.insecure_channel(address, options=own) for _ in range(UNREAD)]
        with contextlib.ExitStack() as closing:
            for channel in channels:
                closing.enter_context(channel)
            request = pb.SubscribeRequest(job_id=job.id, follow=True)
            # Called, never read: each holds what the daemon manages to send it.
            unread = [
                rpc.TailhubServiceStub(channel).Subscribe(request, metadata=bearer(hog))
                for channel in channels
            ]
            try:
                wait_until(lambda: client.get(job.id).subscribers == UNREAD, 30, "the streams")
                _quiet(lambda: client.get(job.id).bytes_served)
                assert client.get(job.id).bytes_served >= BUDGET  # they hold the budget
                got, messages = _read_all(address, reader, job.id)
                # The unread streams were open all along.
                assert client.get(job.id).subscribers == UNREAD
            finally:
                for call in unread:
                    call.cancel()  # type: ignore[no-untyped-call]
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # In full chunks (256 KiB or more), not in the 2 KiB floors of a budget held by the
    # other token's streams: those made 8,192 messages of this log.
    assert messages <= LOG // (64 * KIB), messages
