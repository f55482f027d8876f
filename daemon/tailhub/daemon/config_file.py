"""`config.yaml` in the state directory: daemon settings read once, at start.

Flags win over it (and the client's TAILHUB_BACKEND over its `backend:`). It is a state
file: refused unless it is a regular file of the daemon's user that others cannot write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml

from tailhub.daemon.config import BACKENDS
from tailhub.daemon.paths import StatePaths, shown
from tailhub.daemon.statedir import open_state_file, open_to_others

_KEYS = ("backend", "sky")


@dataclass(frozen=True)
class FileConfig:
    backend: str | None = None
    sky: str | None = None


def read_config_file(paths: StatePaths) -> FileConfig:
    """The settings of the state directory's config.yaml; none when it has none.

    ValueError, naming the file, when it cannot be used."""
    path = paths.root / "config.yaml"
    # Messages name the file by its real path, not the opened home's /proc/PID/fd/N.
    name = shown(path)
    try:
        fd = open_state_file(path, os.O_RDONLY, create=False)
    except FileNotFoundError:
        return FileConfig()
    # The mode of the file read, not of whatever the path names a moment later.
    with os.fdopen(fd, errors="replace") as file:
        info = os.fstat(file.fileno())
        text = file.read()
    # It names a program the daemon runs (`sky:`): only its owner may say which.
    fault = open_to_others(info, path)
    if fault is not None:
        raise ValueError(f"refusing {name}: {fault}")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{name}: malformed YAML: {error}") from None
    if document is None:
        return FileConfig()
    if not isinstance(document, dict):
        raise ValueError(f"{name}: expected a mapping of settings ({', '.join(_KEYS)})")
    unknown = sorted(str(key) for key in document if key not in _KEYS)
    if unknown:
        raise ValueError(f"{name}: unknown setting {unknown[0]!r}; known: {', '.join(_KEYS)}")
    values: dict[str, str] = {}
    for key in _KEYS:
        value = document.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name}: `{key}` must be a string")
        if value:
            values[key] = value
    backend = values.get("backend")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"{name}: unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    return FileConfig(backend=backend, sky=values.get("sky"))
