"""Log sources, chosen by kind from a registry. Each shares the `Source` protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.domain import (
    CommandSpec,
    FileSpec,
    LocalSpec,
    PushSpec,
    SkyPilotSpec,
    SourceKind,
    SourceSpec,
)
from tailhub.daemon.errors import UpstreamFailed, UpstreamUnusable
from tailhub.daemon.process import CommandWrap, as_is
from tailhub.daemon.runner import LocalRunner
from tailhub.daemon.sky import SkyCli
from tailhub.daemon.sources.base import Outcome, Source, Upstream
from tailhub.daemon.sources.command import CommandSource
from tailhub.daemon.sources.file import FileSource
from tailhub.daemon.sources.local import LocalSource
from tailhub.daemon.sources.push import PushSource
from tailhub.daemon.sources.skypilot import SkyPilotSource
from tailhub.daemon.sources.ssh_share import SshShare
from tailhub.daemon.watch import FileWatcher

__all__ = [
    "Outcome",
    "Source",
    "SourceEnvironment",
    "Upstream",
    "UpstreamFailed",
    "UpstreamUnusable",
    "make_source",
]


@dataclass(frozen=True)
class SourceEnvironment:
    """What sources may use from the daemon."""

    config: DaemonConfig
    watcher: FileWatcher
    runner: LocalRunner
    connecting: asyncio.Semaphore
    sky: SkyCli
    # How upstream commands are started (as they are, or as the placement wraps them).
    wrap_command: CommandWrap = as_is
    # How `ssh` commands share one connection per destination (ssh_share.py); None: not.
    ssh_share: SshShare | None = None


SourceFactory = Callable[[int, SourceSpec, SourceEnvironment], Source]


def _local(job_id: int, spec: SourceSpec, environment: SourceEnvironment) -> Source:
    assert isinstance(spec, LocalSpec)
    log_path = environment.config.paths.job_log(job_id)
    return LocalSource(spec, environment.runner, log_path, environment.watcher, job_id)


def _file(job_id: int, spec: SourceSpec, environment: SourceEnvironment) -> Source:
    assert isinstance(spec, FileSpec)
    return FileSource(spec, environment.watcher)


def _command(job_id: int, spec: SourceSpec, environment: SourceEnvironment) -> Source:
    assert isinstance(spec, CommandSpec)
    codes = spec.transport_exit_codes or environment.config.transport_exit_codes
    return CommandSource(
        spec,
        codes,
        environment.runner,
        environment.connecting,
        environment.config.crash_at,
        job_id=job_id,
        wrap=environment.wrap_command,
        ssh_share=environment.ssh_share,
    )


def _push(job_id: int, spec: SourceSpec, environment: SourceEnvironment) -> Source:
    assert isinstance(spec, PushSpec)
    return PushSource(spec)


def _skypilot(job_id: int, spec: SourceSpec, environment: SourceEnvironment) -> Source:
    assert isinstance(spec, SkyPilotSpec)
    return SkyPilotSource(
        spec,
        environment.sky,
        environment.runner,
        environment.connecting,
        job_id=job_id,
        wrap=environment.wrap_command,
    )


_REGISTRY: dict[SourceKind, SourceFactory] = {
    SourceKind.LOCAL: _local,
    SourceKind.FILE: _file,
    SourceKind.COMMAND: _command,
    SourceKind.PUSH: _push,
    SourceKind.SKYPILOT: _skypilot,
}


def make_source(job_id: int, spec: SourceSpec, environment: SourceEnvironment) -> Source:
    return _REGISTRY[spec.kind](job_id, spec, environment)
