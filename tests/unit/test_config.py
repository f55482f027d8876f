"""The daemon's configuration (config.py): a frozen value that refuses what cannot work."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tailhub.daemon.config import (
    KIB,
    MIB,
    ClusterSettings,
    DaemonConfig,
    check_redis_url,
    format_host_port,
    minimal_environment,
    parse_host_port,
)
from tailhub.daemon.paths import StatePaths


def config(**changes: Any) -> DaemonConfig:
    return DaemonConfig(paths=StatePaths(Path("/tmp/th-unit-home")), **changes)


def test_the_defaults_make_a_valid_config_that_cannot_be_changed_after() -> None:
    made = config()
    assert made.max_chunk_bytes <= made.memory_window_bytes
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.heartbeat_interval = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"heartbeat_interval": 0}, "heartbeat interval must be positive"),
        ({"max_chunk_bytes": 512}, "max chunk size must be between 1 KiB and 3 MiB"),
        ({"max_chunk_bytes": 4 * MIB}, "max chunk size must be between 1 KiB and 3 MiB"),
        ({"min_chunk_bytes": 512 * KIB}, "min chunk size must be between 1 KiB and the max"),
        ({"subscriber_budget_bytes": 32 * KIB}, "subscriber budget must hold at least one"),
        ({"memory_window_bytes": 128 * KIB}, "memory window must hold at least one chunk"),
        ({"max_running_jobs": 0}, "max running jobs must be at least 1"),
        ({"cancel_grace": -1.0}, "grace periods cannot be negative"),
        ({"stop_grace": -0.5}, "grace periods cannot be negative"),
        ({"max_connecting_commands": 0}, "max connecting commands must be at least 1"),
        ({"retention_seconds": 0.0}, "retention must be positive"),
        ({"max_ended_jobs": -1}, "max ended jobs cannot be negative"),
        ({"max_jobs_per_token": 0}, "max jobs per token must be at least 1"),
        ({"retain_log_bytes": 0}, "the log budget must be positive"),
        ({"default_backend": "slurm"}, "unknown backend 'slurm': one of local, skypilot"),
        ({"sky_submit_timeout": 0.0}, "sky submission timeout must be positive"),
        ({"metrics_listen": ("", 9100)}, "is not HOST:PORT"),
    ],
)
def test_a_config_that_cannot_work_is_refused_saying_why(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        config(**changes)


def test_no_limits_is_a_valid_choice() -> None:
    made = config(max_running_jobs=None, retention_seconds=None, max_ended_jobs=None)
    assert made.max_running_jobs is None


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://h",
        "rediss://user@host:6380/12",
        "unix:///run/r.sock?db=2",
        "rediss://h:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_certfile=c.pem&ssl_keyfile=k.pem",
    ],
)
def test_redis_urls_naming_one_database_are_taken(url: str) -> None:
    check_redis_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost:6379/2x", "the database '2x' is not a number"),
        ("http://localhost:6379", "starts with redis://, rediss:// or unix://"),
        ("redis://:6379/0", "give the host"),
        ("redis://localhost:99999", "Port out of range"),
        ("unix://", "give the socket's path"),
        ("redis://local\nhost", "not a Redis URL"),
        # redis-py handed these to its connection, whose TypeError was tailhubd's traceback.
        ("redis://h/0?foo=bar", "query sets 'foo', which is no setting"),
        ("redis://h/0?PASSWORD=x", "query sets 'PASSWORD'"),
        ("redis://h/0?ssl_ca_certs=/ca.pem", r"\(with rediss:// only\)"),
        ("unix:///run/r.sock?db=abc", "the database 'abc' is not a number"),
        ("redis://h?db=0&db=1", "sets 'db' twice"),
        ("redis://h/0?client_name=a%20b", "query sets 'client_name'"),
    ],
)
def test_a_redis_url_that_could_join_another_database_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_redis_url(url)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lease_ms": 100}, "the lease must last between 200 ms and 10 minutes"),
        ({"retention_bytes": 1000}, "Redis retention must be at least 1 MiB"),
        ({"node_name": ""}, "the node name must be 1-64 printable characters"),
        ({"node_name": "a b"}, "the node name cannot contain spaces"),
        ({"redis_url": "redis://h/x"}, "is not a number"),
    ],
)
def test_cluster_settings_that_cannot_work_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    settings: dict[str, Any] = {"redis_url": "redis://localhost/0", "node_name": "n1"}
    with pytest.raises(ValueError, match=message):
        ClusterSettings(**{**settings, **changes})


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),  # noqa: S104 - asked for, as the examples say
        ("example.com:443", ("example.com", 443)),
    ],
)
def test_listen_addresses_are_read_and_written_back_the_same(
    text: str, parsed: tuple[str, int]
) -> None:
    assert parse_host_port(text) == parsed
    assert format_host_port(*parsed) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (":9100", "is not HOST:PORT"),  # every interface only when asked for
        ("localhost", "is not HOST:PORT"),
        ("::1:9100", "is not HOST:PORT"),
        ("host:http", "is not HOST:PORT"),
        ("host:70000", "the port must be 0 to 65535, not 70000"),
    ],
)
def test_a_listen_address_that_is_a_typo_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_host_port(text)


def test_a_job_without_its_clients_environment_gets_only_what_a_shell_needs() -> None:
    environ = {"PATH": "/bin", "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "x", "LANG": "C"}
    assert dict(minimal_environment(environ)) == {"PATH": "/bin", "HOME": "/root", "LANG": "C"}
