"""The options `tailhub daemon start|restart` passes on to tailhubd, and which of them a
daemon already running lacks (it records what it applied: see started_with.py)."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tailhub.daemon.started_with import (
    normal_address,
    normal_path,
    redis_url_has_secret,
    without_password,
)

# Passed on as PATHS made absolute: the daemon runs in its state directory.
_PATHS = ("tls-cert", "tls-key", "tls-client-ca", "config")
# The options of `daemon start` a daemon records (started_with.applied_options), and the
# types their values may have there (the record is input like any other state file).
_RECORDED: dict[str, tuple[type, ...]] = {
    "max-running-jobs": (int,),
    "listen": (list,),
    "tls-cert": (str,),
    "tls-key": (str,),
    "tls-client-ca": (str,),
    "insecure": (bool,),
    "max-streams": (int,),
    "max-streams-per-token": (int,),
    "max-connections-per-peer": (int,),
    "subscriber-budget": (int,),
    "metrics-listen": (str,),
    "http-listen": (str,),
    "http-max-streams": (int,),
    "http-max-streams-per-session": (int,),
    "http-max-connections": (int,),
    "http-max-connections-per-peer": (int,),
    "redis": (str,),
    "node-name": (str,),
    "lease-ms": (int,),
}
# Variables tailhubd reads an option from: a daemon started again gets its options on its
# argv, never from whatever this shell holds now.
_OPTION_VARIABLES = ("TAILHUB_CONFIG", "TAILHUB_REDIS", "TAILHUB_NODE_NAME")


@dataclass(frozen=True)
class Requested:
    """Options asked for: normalised as the daemon records them, and as tailhubd's argv."""

    values: dict[str, Any]
    argv: list[str]

    def shown(self) -> str:
        """The argv for a command line we suggest (a Redis password left out)."""
        shown = list(self.argv)
        for index, item in enumerate(shown[:-1]):
            if item == "--redis":
                shown[index + 1] = without_password(shown[index + 1])
        return shlex.join(shown)


def requested(params: Mapping[str, Any]) -> Requested:
    """What the given click params (by their long names, `_` for `-`) ask of tailhubd."""
    values: dict[str, Any] = {}
    argv: list[str] = []
    for key, value in params.items():
        name = key.replace("_", "-")
        if value is None or value is False or value == ():
            continue
        if name == "listen":
            values[name] = [normal_address(address) for address in value]
            argv += [item for address in value for item in ("--listen", address)]
        elif value is True:
            values[name] = True
            argv.append(f"--{name}")
        else:
            text = normal_path(value) if name in _PATHS else str(value)
            values[name] = text if name in _PATHS else _normal(name, value)
            argv += [f"--{name}", text]
    return Requested(values, argv)


def _normal(name: str, value: Any) -> Any:
    if name in ("metrics-listen", "http-listen"):
        return normal_address(value)
    if name == "redis":
        return without_password(value)
    return value


def lacking(asked: Requested, applied: Mapping[str, Any]) -> list[str]:
    """The options (`--listen HOST:PORT`) of `asked` that the daemon which `applied` lacks."""
    missing: list[str] = []
    for name, value in asked.values.items():
        if name == "listen":
            have = applied.get("listen") or []
            missing += [f"--listen {address}" for address in value if address not in have]
        elif name == "config":
            if applied.get("config") != value:
                missing.append(f"--config {value}")
            elif applied.get("config-sha256") != _digest(value):
                missing.append(f"--config {value} as it is now (edited since the daemon read it)")
        elif name == "redis" and _without_password(applied.get(name)) == _without_password(value):
            continue  # (the same Redis: a password is never on a command line, nor recorded)
        elif applied.get(name) != value:
            missing.append(f"--{name}" if value is True else f"--{name} {value}")
    return missing


def _without_password(url: object) -> object:
    """A Redis URL without its password (`redis://:***@host` as recorded, `redis://host` as
    given on a command line): the same Redis either way."""
    if not isinstance(url, str):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + parts.netloc.rpartition("@")[2]))


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return None


def describe(asked: Requested) -> str:
    """` with --listen A, --max-running-jobs 2` (empty when nothing was asked)."""
    return f" with {asked.shown()}" if asked.argv else ""


@dataclass(frozen=True)
class Previous:
    """How the daemon that recorded its options was started: `daemon start` params (by
    their names, `_` for `-`), and its Redis URL when that held a password (shown without
    it): the password came from TAILHUB_REDIS, never from an argv."""

    params: dict[str, Any]
    redis_from_environment: str | None = None

    def environment(self, current: Mapping[str, str]) -> dict[str, str] | None:
        """The environment that starts it again from this one (`current`); None when that
        needs a Redis password `current` does not hold."""
        kept = {key: value for key, value in current.items() if key not in _OPTION_VARIABLES}
        if self.redis_from_environment is None:
            return kept
        url = current.get("TAILHUB_REDIS")
        if url is None or without_password(url) != self.redis_from_environment:
            return None
        return {**kept, "TAILHUB_REDIS": url}


def previous(applied: Mapping[str, Any]) -> Previous:
    """How to start again the daemon that recorded `applied`: its --config file, and the
    options given on its command line or in its environment (every option it recorded when
    the record does not say which: an older daemon's)."""
    given = applied.get("given")
    if not isinstance(given, list):
        given = list(_RECORDED)
    params: dict[str, Any] = {}
    secret_url: str | None = None
    for name in [name for name in _RECORDED if name in given]:  # in `daemon start`'s order
        value: Any = applied.get(name)
        if not _recorded_as(name, value):
            continue
        if name == "listen":
            params[name] = tuple(item for item in value if _is_address(item))
        elif name == "redis" and redis_url_has_secret(value):
            secret_url = value
        else:
            params[name.replace("-", "_")] = value
    if isinstance(applied.get("config"), str):
        params["config"] = applied["config"]
    return Previous(params, secret_url)


def merged(running: Mapping[str, Any], asked: Mapping[str, Any]) -> dict[str, Any]:
    """The params of `running` with those `asked` for instead: the command that keeps what
    the daemon has and adds what it lacks. Addresses to listen on are added to its own;
    asking for TLS files drops --insecure, and --insecure drops TLS files."""
    given = {key: value for key, value in asked.items() if value not in (None, False, ())}
    out = dict(running)
    if given.get("insecure"):
        for key in ("tls_cert", "tls_key", "tls_client_ca"):
            out.pop(key, None)
    if any(key in given for key in ("tls_cert", "tls_key", "tls_client_ca")):
        out.pop("insecure", None)
    for key, value in given.items():
        if key == "listen":
            have = {normal_address(address) for address in out.get("listen", ())}
            out["listen"] = (
                *out.get("listen", ()),
                *(address for address in value if normal_address(address) not in have),
            )
        else:
            out[key] = value
    return out


def _recorded_as(name: str, value: object) -> bool:
    """`value` is one `daemon start` option `name` may have in a record."""
    return name in _RECORDED and isinstance(value, _RECORDED[name])


def _is_address(item: object) -> bool:
    try:
        return isinstance(item, str) and bool(normal_address(item))
    except ValueError:
        return False
