"""`tailhub doctor`'s checks: one function per concern, each returning its findings.

A check only looks: it never starts a daemon, creates a file or changes a mode. Where the
daemon has a rule (which state directory it trusts), the check asks the daemon's own code, so
that the doctor and the daemon can never disagree about it.
"""

from __future__ import annotations

import datetime
import os
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tailhub.client._output import size_text
from tailhub.client._version import (
    DaemonProbe,
    api_version,
    cli_version,
    daemon_line,
    mismatch,
    restart_hint,
)

if TYPE_CHECKING:
    from tailhub.client import DaemonStatus
    from tailhub.client._types import ListenerInfo
    from tailhub.daemon.paths import StatePaths

OK = "ok"
INFO = "info"
WARN = "warn"
FAIL = "FAIL"

# Descriptors a daemon should be able to hold: each follower, followed file and command, and
# each connection costs one or more.
WANTED_OPEN_FILES = 4096
# The share of its descriptor limit a running daemon may hold before it is worth a warning,
# and past which it is a failure: jobs and followers already fail there now and then.
OPEN_FILES_WARN_SHARE = 0.8
OPEN_FILES_FAIL_SHARE = 0.95
CERTIFICATE_WARN_DAYS = 30
DISK_FAIL_BYTES = 100 * 1024 * 1024
DISK_WARN_BYTES = 1024 * 1024 * 1024
DISK_WARN_SHARE = 0.05
REDIS_TIMEOUT = 2.0
_DAY = 24 * 3600.0


@dataclass(frozen=True)
class Finding:
    level: str  # OK, INFO, WARN or FAIL
    topic: str
    message: str


def check_cli() -> list[Finding]:
    return [Finding(OK, "cli", f"tailhub {cli_version()}, API {api_version()}")]


def check_state_directory(paths: StatePaths) -> list[Finding]:
    """The daemon's own trust checks of the directory, its parents and its files."""
    from tailhub.daemon.errors import UntrustedState
    from tailhub.daemon.statedir import (
        check_database,
        check_socket,
        check_state_dir,
        check_state_file,
        ensure_private_dir,
    )

    home = paths.home
    try:
        paths.check_socket_path()
        check_state_dir(home)
        if home.exists():
            for directory in (paths.logs, paths.runs, home / "tls"):
                # Only an existing one: ensure_private_dir would create it.
                if os.path.lexists(directory):
                    ensure_private_dir(directory)
            check_database(paths.database)
            for state_file in (paths.lock, paths.pid, paths.daemon_log):
                check_state_file(state_file)
            check_socket(paths.socket)
    except (UntrustedState, ValueError) as error:
        return [Finding(FAIL, "state directory", _without_prefix(str(error), home))]
    if not home.exists():
        return [Finding(INFO, "state directory", f"{home} does not exist yet; a daemon makes it")]
    return [Finding(OK, "state directory", f"{home} is yours alone")]


def _without_prefix(message: str, home: Path) -> str:
    """The daemon's refusal, said as what the daemon would do."""
    prefix = f"refusing state directory {home}: "
    if message.startswith(prefix):
        return f"the daemon would refuse it: {message[len(prefix) :]}"
    return message


def check_daemon(probe: DaemonProbe, home: str | None) -> list[Finding]:
    """Whether a daemon answers, which version and API it runs, and whether they match ours."""
    status = probe.status
    if status is None:
        if probe.not_running:
            return [Finding(INFO, "daemon", daemon_line(probe))]
        return [Finding(FAIL, "daemon", daemon_line(probe))]
    findings = [Finding(OK, "daemon", daemon_line(probe))]
    differs = mismatch(status)
    if differs is not None:
        other_api = status.api_version and status.api_version != api_version()
        findings.append(
            Finding(
                FAIL if other_api else WARN, "versions", f"{differs}: {restart_hint(probe, home)}"
            )
        )
    return findings


def check_last_stop(paths: StatePaths) -> list[Finding]:
    """With no daemon running: whether the last one stopped cleanly. A clean stop removes its
    pid file; a crash or kill -9 leaves it, with the socket, and nobody holding the lock."""
    from tailhub.daemon.lock import is_held, read_pid

    try:
        pid = read_pid(paths.pid)
    except OSError:  # (check_state_directory names a pid file that cannot be trusted)
        return []
    if not pid or is_held(paths.lock):
        return []
    left = "its pid file and socket" if os.path.lexists(paths.socket) else "its pid file"
    return [
        Finding(
            WARN,
            "last stop",
            f"the last daemon did not stop cleanly (pid {pid} is gone and left {left}): "
            f"see {paths.daemon_log} for why; its local jobs run on, and the next daemon "
            "adopts them",
        )
    ]


def listener_text(listener: ListenerInfo) -> str:
    """`ADDRESS (tls)` for a gRPC listener, `web view on https://ADDRESS` for the web view's."""
    if listener.kind == "web":
        scheme = "http" if listener.security == "plaintext" else "https"
        return f"web view on {scheme}://{listener.address}"
    return f"{listener.address} ({listener.security or 'tls'})"


def check_serving(status: DaemonStatus, probe: DaemonProbe) -> list[Finding]:
    """How the daemon serves: its listeners, metrics and limits (facts, not judgements)."""
    places = [] if probe.remote else [f"socket {status.home}/sock"]
    places += [listener_text(listener) for listener in status.listeners]
    if status.metrics_address:
        places.append(f"metrics on {status.metrics_address}")
    running = (
        f"at most {status.max_running_jobs} local jobs running"
        if status.max_running_jobs
        else "no limit on running local jobs"
    )
    limits = [running, f"subscriber budget {size_text(status.subscriber_budget_bytes)}"]
    if status.max_streams:
        limits.append(
            f"{status.max_streams} network streams ({status.max_streams_per_token} per token)"
        )
    jobs = (
        f"{status.jobs} ({status.running_jobs} not ended), {status.subscribers} subscribers, "
        f"{status.upstream_connections_open} upstream connections open"
    )
    return [
        Finding(INFO, "serving", "; ".join(places) or "(the daemon did not say)"),
        Finding(INFO, "limits", ", ".join(limits)),
        Finding(INFO, "jobs", jobs),
    ]


def check_cluster(status: DaemonStatus, paths: StatePaths | None) -> list[Finding]:
    cluster = status.cluster
    if cluster is None:
        return []
    node = f"node {cluster.node_name}, one of {cluster.nodes} up"
    if cluster.connected:
        return [Finding(OK, "redis", f"the daemon ({node}) reaches {cluster.redis}")]
    where = f"see {paths.daemon_log}" if paths is not None else "see the daemon's log"
    return [
        Finding(
            FAIL,
            "redis",
            f"the daemon ({node}) cannot reach {cluster.redis}; no job is fetched until it "
            f"can: check that Redis is up and reachable from the daemon's machine ({where})",
        )
    ]


def check_redis_env(environ: Mapping[str, str]) -> list[Finding]:
    """A PING to $TAILHUB_REDIS, the Redis a daemon started from here would join."""
    url = environ.get("TAILHUB_REDIS")
    if not url:
        return []
    from tailhub.daemon.config import check_redis_url
    from tailhub.daemon.started_with import without_password

    shown = without_password(url)
    try:
        check_redis_url(url)
    except ValueError as error:
        return [Finding(FAIL, "redis", f"$TAILHUB_REDIS: {error}")]
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
    )
    try:
        client.ping()
    except redis.exceptions.AuthenticationError:
        return [Finding(FAIL, "redis", f"{shown} refused the password of $TAILHUB_REDIS")]
    except redis.exceptions.RedisError as error:
        # The error names the host, never the password: that is only in the URL.
        return [Finding(FAIL, "redis", f"no answer to PING from {shown} ($TAILHUB_REDIS): {error}")]
    finally:
        client.close()
    return [Finding(OK, "redis", f"{shown} ($TAILHUB_REDIS) answers PING")]


def check_certificates(
    paths: StatePaths | None, status: DaemonStatus | None, now: float | None = None
) -> list[Finding]:
    """Those `tailhub daemon tls-init` made in <home>/tls/, and those the daemon serves."""
    now = time.time() if now is None else now
    findings = []
    if paths is not None:
        directory = paths.home / "tls"
        for pem in sorted(directory.glob("*.pem")) if directory.is_dir() else []:
            findings.append(_certificate_file(pem, now))
    for listener in status.listeners if status is not None else ():
        if listener.certificate_not_after is not None:
            what = f"{listener.address} serves {listener.certificate_path or 'a certificate'}"
            findings.append(_expiry(what, listener.certificate_not_after, now, served=True))
    return findings


def _certificate_file(pem: Path, now: float) -> Finding:
    # Imported here: cryptography is slow to import, and most homes have no certificates.
    from cryptography import x509

    try:
        certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    except (OSError, ValueError) as error:
        return Finding(WARN, "tls", f"{pem}: not a readable PEM certificate ({error})")
    return _expiry(pem.name, certificate.not_valid_after_utc.timestamp(), now, served=False)


def _expiry(what: str, not_after: float, now: float, *, served: bool) -> Finding:
    date = datetime.datetime.fromtimestamp(not_after, datetime.timezone.utc).date()
    days = (not_after - now) / _DAY
    renew = "renew with tailhub daemon tls-init --force (clients then need the new ca.pem)"
    renew += ", then restart the daemon" if served else ", and restart a daemon that serves it"
    if days <= 0:
        return Finding(FAIL, "tls", f"{what} expired on {date}: {renew}")
    if days < CERTIFICATE_WARN_DAYS:
        return Finding(WARN, "tls", f"{what} expires in {int(days)} days ({date}): {renew}")
    return Finding(OK, "tls", f"{what}, valid until {date} ({int(days)} days)")


def check_open_files(status: DaemonStatus | None, *, here: bool = True) -> list[Finding]:
    """The descriptor limit a daemon started from here gets (`here`), and the running
    daemon's use of its own."""
    findings = _limit_here() if here else []
    if status is not None and status.open_files is not None and status.max_open_files:
        findings.append(_daemon_descriptors(status.open_files, status.max_open_files))
    return findings


def _limit_here() -> list[Finding]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # tailhubd raises its soft limit to the hard one at start: the hard one is what counts.
    usable = soft if hard == resource.RLIM_INFINITY else hard
    if usable >= WANTED_OPEN_FILES:
        return [
            Finding(OK, "open files", f"a daemon started from here may hold {usable} descriptors")
        ]
    if soft == hard:
        fix = "raise the hard limit"
    else:
        fix = f"run `ulimit -n {hard}` (the hard limit) or raise the hard limit"
    return [
        Finding(
            WARN,
            "open files",
            f"a daemon started from here may hold only {usable} descriptors (ulimit -n {soft}, "
            f"hard {hard}), and each follower and followed job holds one or more: "
            f"{fix} (nofile in /etc/security/limits.conf, or LimitNOFILE=65536 for a systemd "
            f"service), then `ulimit -n 65536` before the daemon starts",
        )
    ]


def _daemon_descriptors(used: int, limit: int) -> Finding:
    held = f"the daemon holds {used} of its {limit} descriptors"
    # Running jobs, followers and upstreams hold them; an ended job holds none once nobody
    # reads it, so removing ended jobs (jobs prune) would not help.
    fix = (
        "raise its limit and restart it: `ulimit -n 65536` then `tailhub daemon restart` "
        "(LimitNOFILE=65536 for a systemd service)"
    )
    if used >= limit * OPEN_FILES_FAIL_SHARE:
        return Finding(
            FAIL,
            "open files",
            f"{held}: jobs fail to start and followers are refused ('Too many open files'); {fix}",
        )
    if used >= limit * OPEN_FILES_WARN_SHARE:
        return Finding(WARN, "open files", f"{held}: new jobs and followers will soon fail; {fix}")
    if limit < WANTED_OPEN_FILES:
        return Finding(
            WARN,
            "open files",
            f"{held}, a low limit: stop it and start it again from a shell with `ulimit -n 65536`",
        )
    return Finding(OK, "open files", held)


def check_disk(paths: StatePaths | None, status: DaemonStatus | None) -> list[Finding]:
    """Free space where the logs live: here, or as the (remote) daemon reports it."""
    if paths is not None:
        where = _existing(paths.logs)
        try:
            usage = os.statvfs(where)
        except OSError as error:
            return [Finding(WARN, "disk", f"cannot read the free space at {where}: {error}")]
        free, total = usage.f_bavail * usage.f_frsize, usage.f_blocks * usage.f_frsize
        place = str(where)
    elif status is not None and status.log_disk_free_bytes is not None:
        free, total = status.log_disk_free_bytes, status.log_disk_total_bytes or 0
        place = "the daemon's log directory"
    else:
        return []
    share = free / total if total else 1.0
    text = f"{size_text(free)} free of {size_text(total)} ({share:.0%}) at {place}"
    prune = "free some space, or remove old jobs: tailhub jobs prune --older-than 7d"
    if free < DISK_FAIL_BYTES:
        return [Finding(FAIL, "disk", f"{text}: jobs fail when it is full; {prune}")]
    if free < DISK_WARN_BYTES or share < DISK_WARN_SHARE:
        return [Finding(WARN, "disk", f"{text}: {prune}")]
    return [Finding(OK, "disk", text)]


def _existing(path: Path) -> Path:
    """`path`, or the nearest directory above it that exists (where it would be made)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
