"""Log sources, chosen by kind from a registry. Each shares the `Source` protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.model import CommandSpec, FileSpec, PushSpec, SourceKind, SourceSpec
from tailhub.daemon.sources.base import Outcome, Source, Upstream, UpstreamFailed, UpstreamUnusable
from tailhub.daemon.sources.command import CommandSource
from tailhub.daemon.sources.file import FileSource
from tailhub.daemon.sources.push import PushSource
from tailhub.daemon.watch import FileWatcher

__all__ = [
    "Outcome",
    "Source",
    "SourceEnvironment",
    "Upstream",
    "UpstreamFailed",
    "UpstreamUnusable",
    "make_source",
    "register_source",
]


@dataclass(frozen=True)
class SourceEnvironment:
    """What sources may use from the daemon."""

    config: DaemonConfig
    watcher: FileWatcher


SourceFactory = Callable[[SourceSpec, SourceEnvironment], Source]
_REGISTRY: dict[SourceKind, SourceFactory] = {}


def register_source(kind: SourceKind, factory: SourceFactory) -> None:
    _REGISTRY[kind] = factory


def make_source(spec: SourceSpec, environment: SourceEnvironment) -> Source:
    return _REGISTRY[spec.kind](spec, environment)


def _file(spec: SourceSpec, environment: SourceEnvironment) -> Source:
    assert isinstance(spec, FileSpec)
    return FileSource(spec, environment.watcher)


def _command(spec: SourceSpec, environment: SourceEnvironment) -> Source:
    assert isinstance(spec, CommandSpec)
    codes = spec.transport_exit_codes or environment.config.transport_exit_codes
    return CommandSource(spec, codes)


def _push(spec: SourceSpec, environment: SourceEnvironment) -> Source:
    assert isinstance(spec, PushSpec)
    return PushSource(spec)


register_source(SourceKind.FILE, _file)
register_source(SourceKind.COMMAND, _command)
register_source(SourceKind.PUSH, _push)
