"""Chaos: the daemon is killed (-9) at random moments under load and restarted each time;
every follower still gets every job's exact bytes, once, and the job's result.

The kill moments come from a seeded RNG; the seed is printed (run with `-s` to see it, or
read it in a failure's message) and TAILHUB_CHAOS_SEED=N replays a run's schedule.
"""

from __future__ import annotations

import os
import random
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from helpers import BackgroundCli, DaemonProcess, wait_until

from tailhub.client import Client, JobState, LogChunk, LogEnd, TailhubError

KILLS = 6
CHUNKS = 120
# Each producer writes a chunk this often: about 6 s of output per job, so that the kills
# land while every job is producing.
PAUSE = 0.05
LIBRARY_FOLLOWERS_PER_JOB = 2

# A local or command job's program: seeded random chunks of binary data, paced.
_PRODUCER = """\
import random, sys, time
rng = random.Random({seed})
for _ in range({chunks}):
    sys.stdout.buffer.write(rng.randbytes(rng.randint(1, 3000)))
    sys.stdout.buffer.flush()
    time.sleep({pause})
"""


def _chunks(seed: int) -> list[bytes]:
    """What `_PRODUCER` with this seed writes, chunk by chunk."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(1, 3000)) for _ in range(CHUNKS)]


def _producer_command(seed: int) -> str:
    program = _PRODUCER.format(seed=seed, chunks=CHUNKS, pause=PAUSE)
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(program)}"


@dataclass
class LibraryFollower:
    """A follower through the client library, in a thread: it reconnects by itself."""

    daemon: DaemonProcess
    job_id: int
    received: bytearray = field(default_factory=bytearray)
    end: LogEnd | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        try:
            with Client.connect(self.daemon.paths, autostart=False) as client:
                for item in client.follow(self.job_id):
                    if isinstance(item, LogChunk):
                        # The library checks that offsets are contiguous; so do we.
                        if item.offset != len(self.received):
                            raise AssertionError(
                                f"bytes at {item.offset} after {len(self.received)} bytes"
                            )
                        self.received += item.data
                    elif isinstance(item, LogEnd):
                        self.end = item
        except BaseException as error:  # reported by the test, with the seed
            self.error = error

    @property
    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()


def _keep_publishing(
    daemon: DaemonProcess, job_id: int, chunks: list[bytes], errors: list[str]
) -> None:
    """Publishes `chunks` in order; after a failed call, asks the daemon how much it holds
    and goes on from there (the bytes are known, so what is stored decides what is next).
    What the daemon acknowledged must still be there after a kill."""
    data = b"".join(chunks)
    ends = [sum(map(len, chunks[: index + 1])) for index in range(len(chunks))]
    with Client.connect(daemon.paths, autostart=False) as client:
        stored = acknowledged = 0
        while stored < len(data):
            end = next(end for end in ends if end > stored)
            try:
                stored = acknowledged = client.publish(job_id, data[stored:end])
            except TailhubError:
                # Killed mid-call: the bytes may or may not have been kept.
                stored = _stored(client, job_id)
                if stored < acknowledged:
                    errors.append(f"push job: {acknowledged} bytes acknowledged, {stored} kept")
                    return
            # Pacing, not synchronisation: the producer writes at a steady rate.
            time.sleep(PAUSE)


def _stored(client: Client, job_id: int) -> int:
    while True:
        try:
            return client.get(job_id).log_size
        except TailhubError:
            continue  # the daemon went down again meanwhile; the call waits for it


def _keep_writing(path: Path, chunks: list[bytes]) -> None:
    for chunk in chunks:
        with path.open("ab") as handle:
            handle.write(chunk)
        # Pacing, not synchronisation: the file grows at a steady rate.
        time.sleep(PAUSE)


def test_followers_get_every_byte_exactly_while_the_daemon_is_killed_at_random(
    daemon: DaemonProcess,
    workdir: Path,
    background_cli: Callable[..., BackgroundCli],
) -> None:
    seed = int(os.environ.get("TAILHUB_CHAOS_SEED", random.SystemRandom().randrange(2**32)))
    print(f"chaos seed: {seed} (TAILHUB_CHAOS_SEED={seed} replays it)")
    rng = random.Random(seed)
    expected: dict[int, bytes] = {}
    threads: list[threading.Thread] = []
    producer_errors: list[str] = []

    with daemon.client() as client:
        for number in range(2):
            job = client.launch(_producer_command(seed + number), name=f"local-{number}")
            expected[job.id] = b"".join(_chunks(seed + number))
        command = client.attach_command([_producer_command(seed + 2)], shell=True, name="command")
        expected[command.id] = b"".join(_chunks(seed + 2))
        push = client.attach_push("push")
        expected[push.id] = b"".join(_chunks(seed + 3))
        threads.append(
            threading.Thread(
                target=_keep_publishing,
                args=(daemon, push.id, _chunks(seed + 3), producer_errors),
            )
        )
        path = workdir / "file.log"
        path.write_bytes(b"")
        file_job = client.attach_file(str(path), "file")
        expected[file_job.id] = b"".join(_chunks(seed + 4))
        threads.append(threading.Thread(target=_keep_writing, args=(path, _chunks(seed + 4))))
        # Launched jobs are recorded as started before any kill: a kill while a local job
        # is being started is another test's business (item 19's crash window).
        wait_until(
            lambda: all(job.state is JobState.RUNNING for job in client.list()),
            20,
            "every job to run",
        )

    followers = [
        LibraryFollower(daemon, job_id)
        for job_id in expected
        for _ in range(LIBRARY_FOLLOWERS_PER_JOB)
    ]
    clis = {job_id: background_cli("jobs", "logs", str(job_id)) for job_id in expected}
    for follower in followers:
        follower.start()
    for thread in threads:
        thread.daemon = True
        thread.start()
    with daemon.client() as client:
        wait_until(
            lambda: sum(job.subscribers for job in client.list()) == len(followers) + len(clis),
            30,
            "every follower to subscribe",
        )

    late: list[LibraryFollower] = []
    for kill in range(KILLS):
        # The chaos itself: a random moment to kill at, not a wait for a condition.
        time.sleep(rng.uniform(0.1, 1.0))
        daemon.kill()
        daemon.start()
        if kill == KILLS // 2:
            # Followers that start from the beginning while the jobs go on and the kills too.
            late = [LibraryFollower(daemon, job_id) for job_id in expected]
            for follower in late:
                follower.start()

    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), f"a producer did not finish (seed {seed})"
    assert producer_errors == [], f"seed {seed}"
    with daemon.client() as client:
        client.finish(push.id)
        wait_until(
            lambda: client.get(file_job.id).log_size == len(expected[file_job.id]),
            what=f"the file job to hold the whole file, no more (seed {seed})",
        )
        client.finish(file_job.id)

    everyone = [*followers, *late]
    wait_until(
        lambda: (
            all(follower.done for follower in everyone)
            and all(cli.process.poll() is not None for cli in clis.values())
        ),
        60,
        f"every follower to end (seed {seed})",
    )
    for follower in everyone:
        assert follower.error is None, f"seed {seed}: job {follower.job_id}: {follower.error!r}"
        assert follower.end is not None
        assert follower.end.state is JobState.SUCCEEDED, (seed, follower.job_id, follower.end)
        assert bytes(follower.received) == expected[follower.job_id], (
            f"seed {seed}: job {follower.job_id}: a library follower got "
            f"{len(follower.received)} bytes, expected {len(expected[follower.job_id])}"
        )
    for job_id, cli in clis.items():
        assert cli.wait() == 0, f"seed {seed}: job {job_id}: {cli.stderr}"
        assert cli.stdout == expected[job_id], (
            f"seed {seed}: job {job_id}: the CLI printed {len(cli.stdout)} bytes, "
            f"expected {len(expected[job_id])}"
        )
    with daemon.client() as client:
        for job_id, data in expected.items():
            job = client.get(job_id)
            assert (job.state, job.log_size, job.sealed) == (JobState.SUCCEEDED, len(data), True)
