"""The options `tailhub daemon start|restart` passes on to tailhubd, and which of them a
daemon already running lacks (it records what it applied: see started_with.py)."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tailhub.daemon.started_with import normal_address, normal_path, without_password

# Passed on as PATHS made absolute: the daemon runs in its state directory.
_PATHS = ("tls-cert", "tls-key", "tls-client-ca", "config")


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
    if name == "metrics-listen":
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
        elif applied.get(name) != value:
            missing.append(f"--{name}" if value is True else f"--{name} {value}")
    return missing


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return None


def describe(asked: Requested) -> str:
    """` with --listen A, --max-running-jobs 2` (empty when nothing was asked)."""
    return f" with {asked.shown()}" if asked.argv else ""
