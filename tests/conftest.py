from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster_helpers import Cluster
from helpers import BackgroundCli, DaemonProcess, start_background_cli
from job_helpers import Gate
from markers import FIXTURE_MARKERS, MARKERS, is_slow, missing_requirement, unavailable
from redis_helpers import RedisServer

# Fixtures that live beside their helpers.
pytest_plugins = ["disk_helpers"]

# What a daemon's own log must never hold: a bug's traceback, or a task nobody supervised.
DAEMON_LOG_FAULTS = ("Traceback", "never retrieved")


def pytest_configure(config: pytest.Config) -> None:
    # A run started in the background (`cmd &` in a script) inherits SIGINT ignored, and so would
    # every CLI the tests interrupt: they test Ctrl-C as a terminal sends it, so restore it.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")
    config.addinivalue_line(
        "markers",
        "daemon_log_may_hold(*faults, reason): the daemon's log may hold these faults in this "
        "test (say why in `reason`)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests using a fixture that needs something get its marker, and those listed slow get
    `slow` (before `-m` selects). The slow ones run first: xdist hands tests out in this order,
    and a long test handed out last would keep one worker busy after the others are done."""
    for item in items:
        if is_slow(item.nodeid) and item.get_closest_marker("slow") is None:
            item.add_marker("slow")
        fixtures = getattr(item, "fixturenames", ())
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in fixtures and item.get_closest_marker(marker) is None:
                item.add_marker(marker)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test whose requirement is missing says which, before any fixture runs (see markers)."""
    for marker in item.iter_markers():
        reason = missing_requirement(marker.name)
        if reason is not None:
            unavailable(reason)


def check_daemon_log(request: pytest.FixtureRequest, text: str, where: str) -> None:
    """Fails the test when `text` holds a fault its `daemon_log_may_hold` marker does not allow."""
    marker = request.node.get_closest_marker("daemon_log_may_hold")
    allowed: tuple[str, ...] = ()
    if marker is not None:
        assert marker.kwargs.get("reason"), "daemon_log_may_hold needs a reason"
        allowed = marker.args
    faults = [fault for fault in DAEMON_LOG_FAULTS if fault not in allowed and fault in text]
    if faults:
        pytest.fail(f"{where} holds {' and '.join(map(repr, faults))}:\n{text}", pytrace=False)


@pytest.fixture
def home(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh state directory with a short path (Unix socket paths are limited to 107 bytes).

    At the end, the log of any daemon the CLI started in it must be free of faults."""
    path = Path(tempfile.mkdtemp(prefix="th-", dir="/tmp"))
    try:
        yield path / "home"
        daemon_log = path / "home" / "tailhubd.log"
        if daemon_log.is_file():
            check_daemon_log(request, daemon_log.read_text(errors="replace"), str(daemon_log))
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _stop_and_check(request: pytest.FixtureRequest, process: DaemonProcess) -> None:
    if process.running:
        process.stop()
    check_daemon_log(request, process.log_text(), f"the log of daemon {process.home}")


@pytest.fixture
def daemon(home: Path, request: pytest.FixtureRequest) -> Iterator[DaemonProcess]:
    """The real daemon, listening on a real socket in a temp directory."""
    process = DaemonProcess(home, args=["--heartbeat-interval", "0.5"])
    process.start()
    try:
        yield process
    finally:
        _stop_and_check(request, process)


@pytest.fixture
def workdir(home: Path) -> Path:
    """A scratch directory beside the state directory for files the test writes."""
    path = home.parent / "work"
    path.mkdir()
    return path


@pytest.fixture
def start_daemon(
    home: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., DaemonProcess]]:
    """Starts the real daemon with extra flags (`"--max-running-jobs", "2"`); stopped at the end."""
    started: list[DaemonProcess] = []

    def start(*args: str) -> DaemonProcess:
        process = DaemonProcess(home, args=["--heartbeat-interval", "0.5", *args])
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        if process.running:
            process.stop()
    for process in started:
        check_daemon_log(request, process.log_text(), f"the log of daemon {process.home}")


@pytest.fixture
def background_cli(home: Path) -> Iterator[Callable[..., BackgroundCli]]:
    """Starts `tailhub ARGS` in the background, output in files; kills what still runs at end."""
    started: list[BackgroundCli] = []

    def start(*args: str) -> BackgroundCli:
        cli = start_background_cli(home, home.parent / "cli", *args)
        started.append(cli)
        return cli

    try:
        yield start
    finally:
        for cli in started:
            cli.stop()


@pytest.fixture
def gate(workdir: Path) -> Iterator[Callable[[str], Gate]]:
    """Closes a gate named NAME in the work directory for jobs to wait on with
    `flock --shared PATH true`; every gate is opened at the end, so that a failing test
    leaves no job waiting behind it."""
    closed: list[Gate] = []

    def close(name: str) -> Gate:
        closed.append(Gate.closed(workdir / name))
        return closed[-1]

    try:
        yield close
    finally:
        for each in closed:
            each.open()


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Starts a redis-server of the test's own (`appendonly=False` for one without
    persistence, `password=` for one that requires it); every one is killed at the end."""
    started: list[RedisServer] = []

    def start(
        *extra_args: str, appendonly: bool = True, password: str | None = None
    ) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", appendonly, extra_args, password)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


@pytest.fixture
def redis_server(start_redis: Callable[..., RedisServer]) -> RedisServer:
    """A redis-server of the test's own, with an fsynced append-only file."""
    return start_redis()


@pytest.fixture
def cluster(
    redis_server: RedisServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """Daemons sharing one real Redis (`cluster.start(3)`); stopped and checked at the end."""
    base = Path(tempfile.mkdtemp(prefix="thc-", dir="/tmp"))  # short: socket paths
    made = Cluster(redis_server, base)
    try:
        yield made
    finally:
        made.stop_all()
        for node in made.nodes.values():
            # Shown by pytest when the test failed: what each node did.
            print(f"--- node {node.home.name}:\n{node.log_text()}")
            check_daemon_log(request, node.log_text(), f"the log of node {node.home.name}")
        shutil.rmtree(base, ignore_errors=True)
