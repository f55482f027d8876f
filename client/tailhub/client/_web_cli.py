"""`tailhub web [--open]`: a one-time login link to the daemon's web view."""

from __future__ import annotations

import sys
import time

import click

from tailhub.client import exit_codes
from tailhub.client._cli_common import connect, home_flag, home_option, remote_targets
from tailhub.client._output import note

_EXAMPLE = "--http-listen 127.0.0.1:8080"


@click.command("web")
@home_option
@click.option("--open", "open_it", is_flag=True, help="Open the link in a browser too.")
def web(home: str | None, open_it: bool) -> None:
    """Print a login link to the daemon's web view (tailhubd --http-listen).

    The link works once, for two minutes: opening it logs the browser in (a session cookie
    for 12 hours, read-only, as this command's token or as the daemon's owner). Exit 1 when
    the daemon serves no web view."""
    from tailhub.client._errors import TailhubError

    # Never started for this: a daemon started now would serve no web view either.
    with connect(home, autostart=False) as client:
        try:
            url, expires_at = client.web_login()
        except TailhubError as error:
            if error.reason != "WEB_VIEW_OFF":
                raise
            hint = (
                ""
                if remote_targets()
                else f" (tailhub daemon start{home_flag(home)} {_EXAMPLE} says how)"
            )
            note(f"{error}{hint}")
            sys.exit(exit_codes.ERROR)
    click.echo(url)
    seconds = max(0, round(expires_at - time.time()))
    note(f"the link works once, within {seconds} s; run `tailhub web` again for another")
    if open_it:
        import webbrowser

        if not webbrowser.open(url):
            note("no browser could be opened here: open the link yourself")
