"""A real redis-server of one's own (cluster tests, the cluster benchmarks): its own process on a
free loopback port, its own directory (append-only file, log), killed and restarted at will."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from harness.ports import free_port
from harness.processes import Owned, kill_group

REDIS_START_TIMEOUT = 20.0
INSTALL_HINT = "redis-server is missing (cluster tests need it): sudo apt-get install redis-server"


@dataclass
class RedisServer(Owned):
    """One redis-server started by a test; `start()` returns once it answers PING (or `with`,
    which closes it at the end).

    With `appendonly` (the default), every write is in the append-only file before Redis
    acknowledges it (`appendfsync always`): what a test wrote survives `kill()` + `restart()`.
    `fsync="everysec"` is Redis's default, as the cluster docs advise (the benchmarks).
    """

    directory: Path
    appendonly: bool = True
    extra_args: tuple[str, ...] = ()
    # With one, clients must AUTH (`requirepass`): a Redis as it should be on a network.
    password: str | None = None
    fsync: str = "always"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _clients: list[redis.Redis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """What `tailhubd --redis` takes (database 0); never the password."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def url_with_password(self) -> str:
        """The URL with its password: for TAILHUB_REDIS or a --config file, never an argv."""
        assert self.password is not None
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("redis-server is not started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Starts it on a free port (tried again on another if one is taken meanwhile)."""
        for _ in range(3):
            self.port = free_port()
            if self._launch():
                return
        raise RuntimeError(f"redis-server did not start: {self.log_text()}")

    def restart(self) -> None:
        """Starts it again on the same port with the same directory: the append-only file
        brings back what it held."""
        assert self.port, "start() first"
        if self.running:
            self.stop()
        if not self._launch():
            raise RuntimeError(f"redis-server did not start again: {self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to write anything more."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(30)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def client(self) -> redis.Redis:
        """A synchronous client (closed with the server at the end of the test)."""
        made = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=10.0
        )
        self._clients.append(made)
        return made

    def close(self) -> None:
        """The end: every client closed, the server and its process group killed."""
        for made in self._clients:
            made.close()
        self._clients.clear()
        if self.process is not None:
            kill_group(self.process)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _launch(self) -> bool:
        """Starts the process on self.port; False when it exited before answering."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(INSTALL_HINT)
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", self.fsync] if self.appendonly else []
        )
        # Only the log file gets Redis's output; its own stdout would be a pipe nobody reads.
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.log_path),
                "--daemonize",
                "no",
                "--save",
                "",
                *persistence,
                *(["--requirepass", self.password] if self.password else []),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its rewrite children die with it at close()
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        delay = 0.005
        with redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1.0
        ) as probe:
            while self.process.poll() is None:
                try:
                    # A Redis still loading its append-only file answers LOADING: not yet.
                    if probe.ping():
                        return True
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"redis-server did not answer PING within {REDIS_START_TIMEOUT}s: "
                        f"{self.log_text()}"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        return False
