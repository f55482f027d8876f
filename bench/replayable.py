"""A paced command source that any daemon can (re)start and that prints the same bytes each time.

A `bench.writer` process, started by the benchmark, appends timestamped lines to a file at a
fixed rate; the job's command is `tail -c +1 -f` of that file. A daemon that takes the job over
restarts the command, which re-prints the file from its first byte: the daemon must skip what
the cluster already stored and resume byte-exactly. The command ends once the writer has
exited (`--pid`), after printing the rest of the file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc

from harness.daemon_process import DaemonProcess
from harness.processes import ProcessSet, python_module
from tailhub.v1 import tailhub_pb2 as pb
from tailhub.v1 import tailhub_pb2_grpc as pb_grpc

GET_TIMEOUT = 10.0


@dataclass(frozen=True)
class Source:
    log: Path
    writer: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        processes: ProcessSet,
        directory: Path,
        rate: float,
        duration: float,
        gate: Path | None = None,
    ) -> Source:
        """Starts the writer. Spawn it before any other process of the set: `wait_all` then
        reaps it first, and `tail --pid` would take a zombie for a live writer."""
        log = directory / "source.log"
        log.touch()
        argv = python_module("bench.writer", str(log), f"--rate={rate}", f"--duration={duration}")
        if gate is not None:
            argv.append(f"--gate={gate}")
        return cls(log, processes.spawn(argv))

    @property
    def argv(self) -> list[str]:
        # -s: how often tail looks whether the writer is still there (inotify wakes it on
        # each write, so this does not delay bytes).
        return ["tail", "-c", "+1", "-f", "-s", "0.1", f"--pid={self.writer.pid}", str(self.log)]

    def stop_writer(self) -> None:
        self.writer.terminate()
        self.writer.wait()

    def digest(self, limit: int | None = None) -> str:
        """sha256 of everything written (or of its first `limit` bytes): what every follower
        must have received (or, one that stopped short, up to where it stopped)."""
        digest = hashlib.sha256()
        left = self.size() if limit is None else limit
        with open(self.log, "rb") as log:
            while left > 0 and (block := log.read(min(left, 1 << 20))):
                digest.update(block)
                left -= len(block)
        return digest.hexdigest()

    def size(self) -> int:
        return os.stat(self.log).st_size


def attach(daemon: DaemonProcess, source: Source, name: str) -> int:
    """Attaches the source's command on `daemon`, as `tailhub jobs attach` would; its job id."""
    with daemon.client() as client:
        return client.attach_command(source.argv, name=name).id


def get_job(address: str, job_id: int) -> pb.Job:
    """The job as one daemon reports it, lease holder included (the client's JobInfo has not
    got the cluster fields)."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TailhubServiceStub(channel)
        request = pb.GetJobRequest(job_id=job_id)
        return stub.GetJob(request, timeout=GET_TIMEOUT, wait_for_ready=True).job
