"""`tailhub jobs ...`: the group, its commands each in the module of what they do."""

from __future__ import annotations

import click

from tailhub.client._cancel_cli import jobs_cancel, jobs_prune, jobs_rm
from tailhub.client._external_cli import jobs_attach, jobs_finish, jobs_publish
from tailhub.client._launch_cli import jobs_launch
from tailhub.client._logs_cli import jobs_logs, jobs_wait
from tailhub.client._queue_cli import jobs_queue
from tailhub.client._show_cli import jobs_show


@click.group()
def jobs() -> None:
    """Launch, attach, follow, finish, cancel and remove jobs."""


for _command in (
    jobs_launch,
    jobs_attach,
    jobs_publish,
    jobs_finish,
    jobs_cancel,
    jobs_rm,
    jobs_prune,
    jobs_logs,
    jobs_wait,
    jobs_queue,
    jobs_show,
):
    jobs.add_command(_command)
