"""Backends, chosen by name from a registry. Each shares the `Backend` protocol."""

from __future__ import annotations

from collections.abc import Callable

from tailhub.daemon.backends.base import Backend, BackendHost, Cancelling
from tailhub.daemon.backends.local import LocalBackend
from tailhub.daemon.backends.skypilot import SkyPilotBackend
from tailhub.daemon.sources import SourceEnvironment
from tailhub.daemon.store import JobStore

__all__ = ["Backend", "BackendHost", "Cancelling", "make_backends"]

BackendFactory = Callable[[BackendHost, SourceEnvironment, JobStore], Backend]

_REGISTRY: dict[str, BackendFactory] = {
    "local": LocalBackend,
    "skypilot": SkyPilotBackend,
}


def make_backends(
    host: BackendHost, environment: SourceEnvironment, store: JobStore
) -> dict[str, Backend]:
    """One instance of every backend, by name."""
    return {name: factory(host, environment, store) for name, factory in _REGISTRY.items()}
