"""`tailhubd.options` in the state directory: the options the running daemon applied.

`tailhub daemon start --listen ...` on a home whose daemon already runs reads it to tell a
daemon that has what was asked from one that lacks it (and must be restarted to get it). It
outlives the daemon: it also says how the home's daemon runs (alone, or which cluster node),
so that nothing starts a daemon of another kind there (home_kind.py). So it is written after
the daemon took the home's lock and before it serves, whole or not at all.
Options are keyed by their long names, values normalised (addresses as HOST:PORT, paths
absolute) the same way on both sides. It never holds a secret: a Redis URL is kept without
its password, so a changed password alone goes unnoticed.
`given` names the options given on the daemon's command line or in its environment (the
others are defaults, or come from its --config file): `tailhub daemon restart` starts the
previous daemon again with them when new options fail, and `daemon start` suggests them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tailhub.daemon.config import format_host_port, parse_host_port
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.statedir import open_state_file, read_state_file

if TYPE_CHECKING:
    from tailhub.daemon.config import DaemonConfig
    from tailhub.daemon.flags_file import FlagsFile
    from tailhub.daemon.listeners import NetworkSettings

FILE_NAME = "tailhubd.options"


# The web view's limits `tailhub daemon start` passes on.
WEB_LIMITS = (
    "http-max-streams",
    "http-max-streams-per-session",
    "http-max-connections",
    "http-max-connections-per-peer",
)


def applied_options(
    params: Mapping[str, Any],
    network: NetworkSettings | None,
    config: DaemonConfig,
    flags: FlagsFile | None,
    given: Collection[str] = (),
) -> dict[str, Any]:
    """The options `tailhub daemon start` can ask for, as tailhubd applied them (its click
    `params`, and what it built of them); `given`: the params given on its command line or
    in its environment."""
    tls = ("tls-cert", "tls-key", "tls-client-ca")
    cluster = config.cluster
    applied = {
        "max-running-jobs": config.max_running_jobs,
        "listen": [str(address) for address in network.addresses] if network else [],
        **{name: _path_or_none(params[name.replace("-", "_")]) for name in tls},
        "insecure": params["insecure"],
        "max-streams": params["max_streams"],
        "max-streams-per-token": params["max_streams_per_token"],
        "max-connections-per-peer": params["max_connections_per_peer"],
        "subscriber-budget": config.subscriber_budget_bytes,
        "metrics-listen": config.metrics_listen and format_host_port(*config.metrics_listen),
        "http-listen": params.get("http_listen") and normal_address(params["http_listen"]),
        **{name: params.get(name.replace("-", "_")) for name in WEB_LIMITS},
        "redis": cluster and without_password(cluster.redis_url),
        "node-name": cluster and cluster.node_name,
        "lease-ms": params["lease_ms"],
        "config": flags and flags.path,
        "config-sha256": flags and flags.sha256,
    }
    applied["given"] = sorted(
        long for long in applied if long.replace("-", "_") in given and applied[long] is not None
    )
    return applied


def _path_or_none(value: str | None) -> str | None:
    return None if value is None else normal_path(value)


def record_options(paths: StatePaths, pid: int, options: Mapping[str, Any]) -> None:
    """Writes what the daemon `pid` applied, replacing the record of any earlier daemon.

    Written beside it and renamed over it: a daemon killed while writing leaves the earlier
    record whole, never a torn one that would say nothing of how the home runs."""
    path = paths.root / FILE_NAME
    scratch = path.with_name(FILE_NAME + ".new")
    fd = open_state_file(scratch, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as file:
        file.write(json.dumps({"pid": pid, "options": dict(options)}) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(scratch, path)


def read_options(paths: StatePaths, pid: int | None) -> dict[str, Any] | None:
    """The options the daemon `pid` recorded (None: the last daemon that ran there, whether
    it runs or not); None when the record is not its (a daemon that has not written it yet,
    or one older than the record) or cannot be read."""
    try:
        record = json.loads(read_state_file(paths.root / FILE_NAME))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or (pid is not None and record.get("pid") != pid):
        return None
    options = record.get("options")
    return options if isinstance(options, dict) else None


def normal_address(text: str) -> str:
    """HOST:PORT as `parse_host_port` reads it and `format_host_port` writes it."""
    return format_host_port(*parse_host_port(text))


def normal_path(text: str) -> str:
    return os.path.abspath(text)


# Said by tailhubd and by `tailhub daemon start|restart` alike, to a password on their argv.
ARGV_REFUSAL = (
    "refusing --redis with a password on the command line (every local user can read it "
    "with ps): give the URL in the environment, TAILHUB_REDIS=redis://:PASSWORD@HOST:PORT/DB, "
    "or as `redis: URL` in a file of yours only (chmod 600) passed as --config FILE"
)
# What redis-py takes from a URL's query as a secret: the password, a TLS key's passphrase.
SECRET_QUERY_KEYS = frozenset({"password", "ssl_password"})


def redis_url_has_secret(url: str) -> bool:
    """True when a Redis URL holds a password (`redis://:PASSWORD@host`, `?password=`)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            return True
        query = parse_qsl(parts.query)
    except ValueError:  # (not a URL: check_redis_url says so)
        return False
    return any(key in SECRET_QUERY_KEYS and value for key, value in query)


def without_password(url: str) -> str:
    """`url` with any password in it (`:PASSWORD@`, `?password=`) replaced by `***` (the
    user name is kept)."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        _ = parts.password
    except ValueError:
        return "(not a URL)"
    if not redis_url_has_secret(url):
        return url
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        name = user.partition(":")[0]
        parts = parts._replace(netloc=f"{name}:***@{host}")
    hidden = [(key, "***" if key in SECRET_QUERY_KEYS else value) for key, value in query]
    return urlunsplit(parts._replace(query=urlencode(hidden, safe="*")))
