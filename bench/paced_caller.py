"""A read-token holder's calls at a fixed pace, in a process of its own (bench/rapid_reset.py).

    python -m bench.paced_caller ADDRESS TOKEN_FILE SECONDS   (prints a JSON report)

One ListJobs every PACE_S on a thread of its own, whatever the earlier ones do: the latencies
sample the whole attack evenly, where back-to-back calls mostly sample the moments the daemon
answers fast (with 4 attacking connections, back-to-back calls had a p50 of 1 ms and paced
ones 65-175 ms). A call that fails counts as CALL_TIMEOUT_S.

A process of its own, as an independent client is, never sharing the back-to-back caller's
GIL. (That changed no figure measurably: at 32 attacking connections the bench read 439 ms
with it in the bench's process and 222-506 ms with it here. What moves the figures is how
the kernel shares the 2 cores between sessions: docs/performance.md.)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as rpc

PACE_S = 0.1
CALL_TIMEOUT_S = 10.0


class Paced:
    def __init__(self, address: str, token: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = rpc.TailhubServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.latencies: list[float] = []
        self.failed: dict[str, int] = {}
        self._lock = threading.Lock()

    def _call(self) -> None:
        started = time.perf_counter()
        try:
            self._stub.ListJobs(
                pb.ListJobsRequest(), metadata=self._metadata, timeout=CALL_TIMEOUT_S
            )
            latency = time.perf_counter() - started
        except grpc.RpcError as error:
            latency = CALL_TIMEOUT_S
            with self._lock:
                self.failed[error.code().name] = self.failed.get(error.code().name, 0) + 1
        with self._lock:
            self.latencies.append(latency)

    def run(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        with ThreadPoolExecutor(max_workers=int(CALL_TIMEOUT_S / PACE_S) + 10) as pool:
            next_call = time.monotonic()
            while next_call < until:
                pool.submit(self._call)
                next_call += PACE_S
                time.sleep(max(0.0, next_call - time.monotonic()))

    def close(self) -> None:
        self._channel.close()


def main(argv: list[str]) -> None:
    address, token_file, seconds = argv[0], Path(argv[1]), float(argv[2])
    paced = Paced(address, token_file.read_text().strip())
    try:
        paced.run(seconds)
    finally:
        paced.close()
    print(json.dumps({"latencies_s": sorted(paced.latencies), "failed": paced.failed}))


if __name__ == "__main__":
    main(sys.argv[1:])
