"""The daemon's configuration: one frozen value, built once and passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from tailhub.daemon.faults import Stall
from tailhub.daemon.limits import shown
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.quotas import DEFAULT_MAX_JOBS_PER_TOKEN, DEFAULT_MAX_LOG_BYTES_PER_TOKEN
from tailhub.daemon.reconnects import ReconnectPolicy

KIB = 1024
MIB = 1024 * KIB
# Where a launched task can run (see backends/).
BACKENDS = ("local", "skypilot")


def check_redis_url(url: str) -> None:
    """ValueError, naming what is wrong, unless `url` names one Redis database: a typo
    must not join another database's cluster (redis-py would read `/2x` as database 0)."""
    what = f"--redis {shown(url)}"
    if len(url) > 1024 or not url.isprintable():
        raise ValueError(f"{what}: not a Redis URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # (raises unless it is a number below 65536)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None
    _check_query(parts.query, tls=parts.scheme == "rediss")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"{what}: give the socket's path (unix:///PATH?db=N)")
        return
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"{what}: a Redis URL starts with redis://, rediss:// or unix://")
    if not parts.hostname:
        raise ValueError(f"{what}: give the host (redis://HOST:PORT/DB)")
    database = parts.path.strip("/")
    if database and not _is_database(database):
        raise ValueError(f"{what}: the database {shown(database)} is not a number")


def _is_database(text: str) -> bool:
    """A Redis database's number, as a URL's path or its `db` may give it."""
    return text.isdigit() and len(text) < 6


# What a --redis URL's query may set. redis-py hands any other key to its connection as an
# argument, which refuses it with a traceback when the daemon first connects.
REDIS_QUERY_KEYS = frozenset({"db", "password"})
REDIS_TLS_QUERY_KEYS = frozenset(
    {"ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_password"}
    | {"ssl_cert_reqs", "ssl_check_hostname", "ssl_ciphers"}
)


def _check_query(query: str, *, tls: bool) -> None:
    """ValueError naming the first key a --redis URL's query may not hold (never its value:
    it may be a secret)."""
    allowed = REDIS_QUERY_KEYS | (REDIS_TLS_QUERY_KEYS if tls else frozenset())
    seen: set[str] = set()
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in seen:  # (redis-py takes the last: `?db=0&db=1` joined database 1)
            raise ValueError(f"--redis: the URL's query sets {shown(key)} twice")
        seen.add(key)
        if key == "db" and not _is_database(value):
            raise ValueError(f"--redis: the database {shown(value)} is not a number")
        if key not in allowed:
            hint = " (with rediss:// only)" if key in REDIS_TLS_QUERY_KEYS else ""
            raise ValueError(
                f"--redis: the URL's query sets {shown(key)}, which is no setting tailhub "
                f"passes to Redis{hint}; known: {', '.join(sorted(allowed))}"
            )


# The longest fetch lease a node takes: a lease key in Redis that lasts longer was planted.
MAX_LEASE_MS = 600_000


@dataclass(frozen=True)
class ClusterSettings:
    """Cluster mode (`tailhubd --redis`): several daemons share jobs through one Redis."""

    redis_url: str
    # This daemon's name in the cluster: unique, and the same across its restarts (local and
    # file jobs are pinned to the node that started them).
    node_name: str
    # A fetch lease lasts this long unless renewed (every quarter of it): a dead holder's
    # jobs are taken over within about this long.
    lease_ms: int = 3000
    # Bytes of each job's log kept in Redis; older ones are trimmed (0: none).
    retention_bytes: int = 256 * MIB
    # Fault injection for tests (TAILHUB_CLUSTER_STALL=P:S[:STOP_FILE]): before a lease
    # renewal, with probability P, the daemon stops for S seconds.
    stall: Stall | None = None

    def __post_init__(self) -> None:
        check_redis_url(self.redis_url)
        if not 200 <= self.lease_ms <= MAX_LEASE_MS:
            raise ValueError("the lease must last between 200 ms and 10 minutes")
        if self.retention_bytes and self.retention_bytes < 1 * MIB:
            raise ValueError("Redis retention must be at least 1 MiB (0: keep everything)")
        if not self.node_name or len(self.node_name) > 64 or not self.node_name.isprintable():
            raise ValueError("the node name must be 1-64 printable characters")
        if " " in self.node_name:
            raise ValueError("the node name cannot contain spaces")


@dataclass(frozen=True)
class DaemonConfig:
    """Everything tunable about a daemon. Validated on construction."""

    paths: StatePaths
    # Subscribers that are idle receive the log's size and the job's state this often.
    heartbeat_interval: float = 5.0
    # Most recent bytes of each active log kept in memory for subscribers at the live edge.
    memory_window_bytes: int = 2 * MIB
    # A message carries everything past the subscriber's offset up to this many bytes: under
    # load messages grow rather than multiply (grpc.aio costs ~20 us per message).
    max_chunk_bytes: int = 256 * KIB
    # Bytes in flight to all subscribers together (read and encoded, not yet taken by gRPC):
    # what bounds memory however many followers fall behind. When it is tight a subscriber
    # waits for a whole chunk (and falls behind); chunks cut short end on multiples of
    # `min_chunk_bytes` (budget.py, fanout.py).
    subscriber_budget_bytes: int = 16 * MIB
    min_chunk_bytes: int = 64 * KIB
    # Command exit codes that mean "the connection failed" (ssh uses 255).
    transport_exit_codes: frozenset[int] = field(default_factory=lambda: frozenset({255}))
    # After a failed connection: the delays (doubling, with jitter) and when to give up.
    reconnect_policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    # Commands connecting at once (started, no byte yet): below sshd's MaxStartups (10), so a
    # burst of attached ssh jobs is queued here instead of being dropped there.
    max_connecting_commands: int = 8
    # Local jobs running at once; None means no limit.
    max_running_jobs: int | None = None
    # Seconds between SIGTERM and SIGKILL when a local job is cancelled.
    cancel_grace: float = 10.0
    # Seconds a stopping daemon gives streams to end before closing them.
    stop_grace: float = 2.0
    # grpc.aio rejects requests beyond this many in flight (its default, 1000, drops bursts).
    max_concurrent_streams: int = 100_000
    # The base environment of a launched job whose client sent none (a minimal one, see
    # `minimal_environment`): never the daemon's whole environment.
    job_environment: tuple[tuple[str, str], ...] = ()
    # Jobs run with the umask the daemon was started with, not the daemon's own 077.
    job_umask: int = 0o022
    # Ended jobs are removed (record, events, log) this long after they ended; None keeps them.
    retention_seconds: float | None = 30 * 24 * 3600.0
    # At most this many ended jobs are kept, the oldest removed first; None: no limit.
    max_ended_jobs: int | None = 10_000
    # Ended jobs' logs hold at most this many bytes together, the oldest removed first (so
    # that a disk does not fill with logs nobody reads); None: no budget.
    retain_log_bytes: int | None = None
    # Jobs not ended that one token may hold (the Unix socket's owner is not limited), and the
    # bytes of log all its jobs may hold.
    max_jobs_per_token: int = DEFAULT_MAX_JOBS_PER_TOKEN
    max_log_bytes_per_token: int = DEFAULT_MAX_LOG_BYTES_PER_TOKEN
    # Seconds between retries of a fetch paused because the disk is full.
    disk_full_retry: float = 1.0
    # Fault injection for tests (TAILHUB_CRASH_AT): points where the daemon kills itself.
    crash_at: frozenset[str] = frozenset()
    # Fault injection for tests (TAILHUB_FAIL_LOOP): essential tasks that raise once the
    # daemon serves, each after its delay in seconds (supervisor.py).
    fail_loops: tuple[tuple[str, float], ...] = ()
    # The backend of a launch that names none: "local" or "skypilot".
    default_backend: str = "local"
    # The `sky` executable (a path, or a name looked up on the PATH it runs with).
    sky: str = "sky"
    # The environment `sky` runs with when no launching client sent one (attached jobs):
    # the daemon's own, as `sky` is a program of the daemon's user, not a job.
    sky_environment: tuple[tuple[str, str], ...] = ()
    # Seconds a `sky jobs launch` may take before it is stopped and the job failed.
    sky_submit_timeout: float = 600.0
    # Where `/metrics` is served over plain HTTP, without authentication (host, port); None:
    # no metrics endpoint, no RPC counting.
    metrics_listen: tuple[str, int] | None = None
    # Cluster mode: the Redis shared with other daemons; None: this daemon alone.
    cluster: ClusterSettings | None = None

    def __post_init__(self) -> None:
        self._check_times()
        self._check_sizes()
        self._check_limits()
        self._check_retention()
        if self.default_backend not in BACKENDS:
            raise ValueError(
                f"unknown backend {self.default_backend!r}: one of {', '.join(BACKENDS)}"
            )
        if self.metrics_listen is not None:
            parse_host_port(format_host_port(*self.metrics_listen))

    def _check_times(self) -> None:
        if self.heartbeat_interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        if self.cancel_grace < 0 or self.stop_grace < 0:
            raise ValueError("grace periods cannot be negative")
        if self.sky_submit_timeout <= 0:
            raise ValueError("the sky submission timeout must be positive")

    def _check_limits(self) -> None:
        if self.max_running_jobs is not None and self.max_running_jobs < 1:
            raise ValueError("max running jobs must be at least 1")
        if self.max_connecting_commands < 1:
            raise ValueError("max connecting commands must be at least 1")
        if self.max_jobs_per_token < 1:
            raise ValueError("max jobs per token must be at least 1")
        if self.max_log_bytes_per_token < 1:
            raise ValueError("max log bytes per token must be at least 1")

    def _check_retention(self) -> None:
        if self.retention_seconds is not None and self.retention_seconds <= 0:
            raise ValueError("retention must be positive (None keeps ended jobs)")
        if self.max_ended_jobs is not None and self.max_ended_jobs < 0:
            raise ValueError("max ended jobs cannot be negative")
        if self.retain_log_bytes is not None and self.retain_log_bytes <= 0:
            raise ValueError("the log budget must be positive (None: no budget)")

    def _check_sizes(self) -> None:
        if self.max_chunk_bytes < 1 * KIB or self.max_chunk_bytes > 3 * MIB:
            raise ValueError("max chunk size must be between 1 KiB and 3 MiB")
        if not KIB <= self.min_chunk_bytes <= self.max_chunk_bytes:
            raise ValueError("min chunk size must be between 1 KiB and the max chunk size")
        if self.subscriber_budget_bytes < self.min_chunk_bytes:
            raise ValueError(
                f"the subscriber budget must hold at least one minimum chunk"
                f" ({self.min_chunk_bytes} bytes)"
            )
        if self.memory_window_bytes < self.max_chunk_bytes:
            raise ValueError("memory window must hold at least one chunk")


# What a job started without its client's environment still needs to run a shell script.
_MINIMAL_ENVIRONMENT = ("HOME", "USER", "LOGNAME", "SHELL", "PATH", "LANG")


def minimal_environment(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """HOME, USER, LOGNAME, SHELL, PATH and LANG of `environ`, those it has."""
    return tuple((name, environ[name]) for name in _MINIMAL_ENVIRONMENT if name in environ)


# Examples for a listening address; a client's address flag gives its own (never 0.0.0.0).
LISTEN_EXAMPLES = "127.0.0.1:9100, [::1]:9100, 0.0.0.0:9100"


def parse_host_port(text: str, examples: str = LISTEN_EXAMPLES) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9100` for IPv6) as (host, port); ValueError saying what is wrong.

    The host is required: an empty one would mean every interface, which must be asked for
    (`0.0.0.0`), never the result of a typo.
    """
    host, colon, port_text = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if (
        not colon
        or not host
        or len(host) > 253  # the longest DNS name
        or not (host.isascii() and host.isprintable() and " " not in host)
        or (":" in host and not bracketed)  # ::1:9100 is ambiguous; [::1]:9100 is not
        or not (port_text.isascii() and port_text.isdigit())
    ):
        raise ValueError(f"{shown(text)} is not HOST:PORT (e.g. {examples})")
    if not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{shown(text)}: the port must be 0 to 65535, not {int(port_text)}")
    return host, int(port_text)


def format_host_port(host: str, port: int) -> str:
    """The inverse of `parse_host_port`: brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
