"""`tailhub doctor`: runs the checks of _doctor.py and prints one line per finding."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from tailhub.client import exit_codes
from tailhub.client._cli_common import given_home, home_option, remote_targets
from tailhub.client._output import printable

if TYPE_CHECKING:
    from tailhub.client._doctor import Finding
    from tailhub.daemon.paths import StatePaths


@click.command("doctor")
@home_option
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on failures.")
def doctor(home: str | None, strict: bool) -> None:
    """Check the CLI, the daemon, the state directory, TLS certificates, Redis, open-file
    limits and disk space: one line per finding, with what to do. Never starts a daemon.

    Exit 0 when nothing failed (warnings count only with --strict), 1 when something did.
    """
    from tailhub.client import _doctor as checks
    from tailhub.client._version import probe_daemon

    remote = remote_targets() is not None
    paths = None if remote else _paths(home)
    report = _Report()
    report.run(checks.check_cli)
    if paths is not None and not report.run(lambda: checks.check_state_directory(paths)):
        # Client.connect would refuse it too: nothing is sent to a daemon behind it.
        report.add(
            checks.Finding(checks.INFO, "daemon", "not asked: the state directory is refused")
        )
        probe = None
    else:
        probe = probe_daemon(home)
        report.run(lambda: checks.check_daemon(probe, home))
        if probe.not_running and paths is not None:
            report.run(lambda: checks.check_last_stop(paths))
    status = None if probe is None else probe.status
    if status is not None and probe is not None:
        report.run(lambda: checks.check_serving(status, probe))
        report.run(lambda: checks.check_cluster(status, paths))
    if not remote:
        report.run(lambda: checks.check_redis_env(os.environ))
    report.run(lambda: checks.check_certificates(paths, status))
    # This machine's limit only matters for a daemon started here.
    report.run(lambda: checks.check_open_files(status, here=not remote))
    report.run(lambda: checks.check_disk(paths, status))
    failed = checks.FAIL in report.levels or (strict and checks.WARN in report.levels)
    sys.exit(exit_codes.ERROR if failed else exit_codes.SUCCEEDED)


def _paths(home: str | None) -> StatePaths:
    """The state directory as given, not yet trusted (checking it is the doctor's job)."""
    from tailhub.daemon.paths import StatePaths, resolve_home

    try:
        return StatePaths(resolve_home(given_home(home), os.environ))
    except ValueError as error:
        raise click.UsageError(str(error)) from None


class _Report:
    """Prints findings as they come and remembers their levels."""

    def __init__(self) -> None:
        self.levels: set[str] = set()

    def run(self, check: Callable[[], list[Finding]]) -> bool:
        """Runs one check and prints what it found; False when something failed. A check
        that breaks is one failed line, never a traceback."""
        from tailhub.client._doctor import FAIL, Finding

        try:
            findings = check()
        except Exception as error:
            # A broken check must not hide the others' findings.
            findings = [Finding(FAIL, "doctor", f"a check failed unexpectedly: {error!r}")]
        for finding in findings:
            self.add(finding)
        return all(finding.level != FAIL for finding in findings)

    def add(self, finding: Finding) -> None:
        self.levels.add(finding.level)
        click.echo(f"{finding.level:<6}{finding.topic}: {printable(finding.message)}")
