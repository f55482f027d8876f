"""The node's one fence (issue 19, item 5): however many commands a node runs, one small process
kills each when its lease's safe time passes, also while the daemon is frozen; a command whose
lease is renewed lives on; a fence that dies stops what it guarded and is replaced; and every
lease of a node is renewed in one round trip to Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from cluster_helpers import REPLAY, Cluster, payload, upstream
from helpers import DaemonProcess, run_cli, start_background_cli, wait_until
from job_helpers import write_task
from redis_helpers import RedisServer
from skydouble import SKY, SkyDouble

from tailhub.daemon.process import FETCH_MARKER
from tailhub.daemon.process.fences import GATE_NAME

FENCE = b"tailhub.daemon.process.fence"
# A command that says it is up, then runs until it is killed.
FOREVER = ["/bin/sh", "-c", "echo up; exec sleep 600"]


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError):
                continue
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _fences(node: DaemonProcess) -> list[int]:
    return [pid for pid in _children(node.pid) if FENCE in _cmdline(pid)]


def _gates(node: DaemonProcess) -> list[int]:
    """The gates of the node's upstream commands (each the daemon's own child)."""
    return [pid for pid in _children(node.pid) if GATE_NAME.encode() in _cmdline(pid)]


def _commands(node: DaemonProcess) -> list[int]:
    """The node's upstream commands (each its gate's only child)."""
    children = [pid for gate in _gates(node) for pid in _children(gate)]
    return [pid for pid in children if _cmdline(pid).startswith(b"sleep\0")]


def _guarded(fence: int) -> set[int]:
    """The pids the fence holds a pidfd of (its /proc fdinfo names each one's pid)."""
    found = set()
    for fd in os.listdir(f"/proc/{fence}/fdinfo"):
        try:
            info = Path(f"/proc/{fence}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            if line.startswith("Pid:"):
                found.add(int(line.split()[1]))
    return found


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def _attach_forever(node: DaemonProcess, count: int) -> None:
    with node.client() as client:
        jobs = [client.attach_command(FOREVER) for _ in range(count)]

    def all_up() -> bool:
        with node.client() as client:
            return all(client.get(job.id).log_size >= len(b"up\n") for job in jobs)

    wait_until(all_up, 60, f"{count} commands to start")


@pytest.mark.slow
def test_twenty_command_jobs_on_a_node_have_one_fence_guarding_each(cluster: Cluster) -> None:
    (node,) = cluster.start(1)
    _attach_forever(node, 20)
    fences = _fences(node)
    assert len(fences) == 1, fences  # not one per command
    commands = _commands(node)
    assert len(commands) == 20
    # Each command is its gate's child, the gate the daemon's, and the fence holds a pidfd of
    # every gate (the leader of the group it kills).
    gates = _gates(node)
    assert len(gates) == 20
    assert set(gates) <= _guarded(fences[0])
    # Its environment is empty (nothing of the daemon's, nor of any job's), and it stays small.
    assert Path(f"/proc/{fences[0]}/environ").read_bytes() == b""
    rss_kib = int(Path(f"/proc/{fences[0]}/status").read_text().split("VmRSS:")[1].split()[0])
    assert rss_kib < 25 * 1024

    # The daemon killed with kill -9: the fence kills every command at once, then exits.
    fence = fences[0]
    node.kill()
    wait_until(
        lambda: not any(map(_alive, [fence, *gates, *commands])), 10, "commands and fence gone"
    )


@pytest.mark.slow
def test_a_frozen_nodes_command_lives_while_renewed_and_dies_at_its_safe_time(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    cluster.lease_ms = 1500
    (node,) = cluster.start(1)
    _attach_forever(node, 1)
    (command,) = _commands(node)
    # Renewed every quarter lease: it runs on past several lease lengths.
    lived_until = time.monotonic() + 3 * 1.5
    while time.monotonic() < lived_until:
        assert _alive(command), "a command whose lease was renewed was killed"
        time.sleep(0.1)
    redis = redis_server.client()
    (lease,) = redis.keys("tailhub:lease:*")
    os.kill(node.pid, signal.SIGSTOP)  # its loop and its watchdog thread alike
    try:
        frozen = time.monotonic()
        wait_until(lambda: not _alive(command), 10, "the fence to kill the frozen node's command")
        died_after = time.monotonic() - frozen
        # Killed before the lease expired in Redis: before any other node could take the job.
        left_ms = redis.pttl(lease)
        assert left_ms > 0, f"the command outlived its lease ({died_after:.2f} s after the stop)"
        assert _stat(node.pid)[0] == "T"  # (nobody but the fence could have done it)
    finally:
        os.kill(node.pid, signal.SIGCONT)
    assert died_after < 1.5
    print(f"killed {died_after:.2f} s after the freeze, {left_ms} ms before the lease's expiry")


@pytest.mark.slow
def test_a_killed_fence_stops_what_it_guarded_and_a_new_one_guards_the_rest(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.lease_ms = 1000
    (node,) = cluster.start(1)
    data = payload(256 * 1024, seed=23)
    half = len(data) // 2
    log, state = upstream(tmp_path / "up", data[:half])
    with node.client() as client:
        job = client.attach_command([sys.executable, REPLAY, str(log), str(state)])
    follower = start_background_cli(node.home, tmp_path / "follower", "jobs", "logs", str(job.id))
    try:
        follower.wait_for_stdout(data[:half])
        (old,) = _fences(node)
        os.kill(old, signal.SIGKILL)
        # Failed closed: its command stopped with its lease, and came back behind a new fence.
        wait_until(lambda: (state / "connections").read_text() == "2", 30, "a new connection")
        (new,) = _fences(node)
        assert new != old
        with open(log, "ab") as more:
            more.write(data[half:])
        (state / "done").touch()
        assert follower.wait(60) == 0, follower.stderr
        assert follower.stdout == data  # nothing lost, nothing twice
    finally:
        follower.stop()
    assert not (state / "overlaps").exists()
    assert "the fence around this node's upstream commands died" in node.log_text()


def test_every_lease_of_a_node_is_renewed_in_one_round_trip(redis_server: RedisServer) -> None:
    import redis.asyncio

    from tailhub.daemon.cluster.redis_store import RedisStore

    def scripts_run(info: dict[str, dict[str, int]]) -> int:
        return sum(info.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))

    sync = redis_server.client()

    async def renew() -> tuple[dict[int, bool] | None, int, dict[int, bool] | None]:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        store = RedisStore(client)
        try:
            await store.ensure_cluster_id()
            tokens: dict[int, str] = {}
            for job_id in range(1, 51):
                tokens[job_id] = str(await store.create(job_id, {}, "n0", 60_000))
            # Job 7's lease moved on to another node.
            await client.pexpire("tailhub:lease:7", 1)
            while await store.acquire(7, "n1", 60_000) is None:
                await asyncio.sleep(0.01)
            await store.renew_all({1: tokens[1]}, 60_000)  # (the script loaded)
            before = scripts_run(sync.info("commandstats"))
            renewed = await store.renew_all(tokens, 600_000)
            calls = scripts_run(sync.info("commandstats")) - before
            await client.delete("tailhub:cluster")  # Redis lost the cluster's data
            return renewed, calls, await store.renew_all(tokens, 60_000)
        finally:
            await client.aclose()

    renewed, calls, lost = asyncio.run(renew())
    assert calls == 1
    assert renewed == {job_id: job_id != 7 for job_id in range(1, 51)}
    assert sync.pttl("tailhub:lease:1") > 300_000  # renewed for the length asked
    assert sync.get("tailhub:lease:7") == b"n1 2"  # the other node's lease untouched
    assert lost is None


def test_the_fence_never_starts_a_command_without_a_safe_time_and_kills_its_whole_group(
    tmp_path: Path,
) -> None:
    from tailhub.daemon.process.fences import NodeFence, gate_argv

    ran = tmp_path / "ran"
    child = tmp_path / "child"

    async def start(fence: NodeFence, job_id: int, script: str) -> asyncio.subprocess.Process:
        go, report = fence.arm(job_id)
        try:
            return await asyncio.create_subprocess_exec(
                *gate_argv(go, report, ["/bin/sh", "-c", script]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
                pass_fds=(go, report),
            )
        finally:
            os.close(go)
            os.close(report)

    async def scenario() -> tuple[int, float, int]:
        fence = NodeFence()
        fence.start()
        try:
            # No safe time known for job 1: its command never runs.
            refused = await start(fence, 1, f"touch {ran}")
            refused_status = await refused.wait()
            # Job 2 is safe for 0.5 s; its command starts a child in its group, which dies too.
            fence.extend({2: time.monotonic() + 0.5})
            fenced = await start(fence, 2, f"sleep 600 & echo $! > {child}; echo up; wait")
            assert fenced.stdout is not None
            assert await fenced.stdout.readline() == b"up\n"
            started = time.monotonic()
            status = await fenced.wait()
            return refused_status, time.monotonic() - started, status
        finally:
            fence.close()

    refused_status, lived, status = asyncio.run(scenario())
    assert refused_status != 0
    assert not ran.exists()
    assert status == -signal.SIGKILL
    assert lived < 5
    grandchild = int(child.read_text())
    wait_until(lambda: not _alive(grandchild), 10, "the command's child to be killed with it")


def _runs(marks: Path) -> dict[int, tuple[float, float]]:
    """Each command's pid -> the first and last moment it wrote (time.time() seconds)."""
    runs: dict[int, tuple[float, float]] = {}
    for line in marks.read_text().splitlines():
        words = line.split()
        if len(words) != 2:
            continue  # (a line being written)
        pid, moment = int(words[0]), float(words[1])
        first, _ = runs.get(pid, (moment, moment))
        runs[pid] = (first, moment)
    return runs


@pytest.mark.slow
def test_a_command_dies_with_its_daemon_even_when_the_fence_dies_with_it(
    cluster: Cluster, redis_server: RedisServer, tmp_path: Path
) -> None:
    # Found by an attacker: kill -9 of the daemon and its fence at once (pkill -9 -f
    # tailhub.daemon matches both) left the command running, an orphan, while another node
    # started it again: two upstreams at once. The kernel kills it now (parent death).
    cluster.lease_ms = 2000
    first, second = cluster.start(2)
    marks = tmp_path / "marks"
    child = tmp_path / "child"
    # Starts a child that outlives it unless its group is killed (as `tail -f` under `sh -c`),
    # then writes its pid and the time every 0.1 s, ignoring SIGPIPE (nobody reads its output).
    script = (
        f"sleep 600 & echo $! > {child}; trap '' PIPE; echo up; "
        f'while :; do echo "$$ $(date +%s.%N)" >> {marks}; sleep 0.1; done'
    )
    with first.client() as client:
        job = client.attach_command(["/bin/sh", "-c", script])
    wait_until(lambda: marks.exists() and len(_runs(marks)) == 1, 30, "the command to write")
    (command,) = _runs(marks)
    (fence,) = _fences(first)
    gate = int(_stat(command)[1])
    assert int(_stat(gate)[1]) == first.pid  # (the gate's parent: the daemon)
    grandchild = int(child.read_text())
    redis = redis_server.client()
    try:
        # Both frozen first, so that neither can act on the other's end: then both killed.
        os.kill(first.pid, signal.SIGSTOP)
        os.kill(fence, signal.SIGSTOP)
        os.kill(fence, signal.SIGKILL)
        first.kill()
        killed = time.monotonic()
        wait_until(lambda: not _alive(command), 5, "the command to die with its daemon")
        died_after = time.monotonic() - killed
        # Its child too: before, only the command died, and the child lived on as an orphan.
        wait_until(lambda: not _alive(grandchild), 5, "the command's child to die with it")
        # Dead while the lease still held: before any other node could start it again.
        assert redis.pttl(f"tailhub:lease:{job.id}") > 0, f"died {died_after:.2f} s after"
        # The other node takes the job over and runs the command: never two at once.
        wait_until(lambda: len(_runs(marks)) == 2, 30, "the other node to run the command")
        runs = _runs(marks)
        (later,) = set(runs) - {command}
        assert runs[command][1] < runs[later][0], runs
        assert cluster.holder(job.id, on=second) == "n1"
    finally:
        orphans = [command, *([int(child.read_text())] if child.exists() else [])]
        for orphan in orphans:  # (nobody else would stop them)
            if _alive(orphan) and _cmdline(orphan).startswith((b"/bin/sh\0", b"sleep\0")):
                os.kill(orphan, signal.SIGKILL)
    print(f"the command died {died_after * 1000:.0f} ms after its daemon and fence")


def test_a_skypilot_jobs_sky_runs_behind_the_fence_and_dies_with_its_node(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, a SkyPilot job's `sky jobs launch` / `sky jobs logs` ran unfenced in cluster
    # mode: a frozen or killed node's could stream on beside the one another node started.
    sky = SkyDouble(tmp_path / "sky")
    sky.home.mkdir()
    # The launching shell's environment is the launch's (the double finds its state by it).
    monkeypatch.setenv("SKY_DOUBLE_HOME", str(sky.home))
    (node,) = [cluster.add("n0", "--sky", str(SKY), env={"SKY_DOUBLE_HOME": str(sky.home)})]
    try:
        task = write_task(tmp_path, "run: echo up; sleep 600\n")
        launched = run_cli(
            node.home, "jobs", "launch", "--async", "--backend", "skypilot", str(task)
        )
        assert launched.returncode == 0, launched.stderr
        job_id = int(launched.stdout)

        def sky_processes() -> list[int]:
            with node.client() as client:
                job = client.get(job_id)
            assert not job.state.terminal, job.reason  # (a launch that failed: say why)
            children = [pid for gate in _gates(node) for pid in _children(gate)]
            return [pid for pid in children if str(SKY).encode() in _cmdline(pid)]

        wait_until(sky_processes, 60, "the job's sky process, behind a gate")
        launches = sky_processes()
        (fence,) = _fences(node)
        assert set(_gates(node)) <= _guarded(fence)
        for launch in launches:
            environ = Path(f"/proc/{launch}/environ").read_bytes().split(b"\0")
            assert f"{FETCH_MARKER}={job_id}".encode() in environ
        node.kill()
        wait_until(
            lambda: not any(map(_alive, launches)), 10, "the sky process to die with its node"
        )
    finally:
        sky.run("jobs", "cancel", "-a", "-y")
