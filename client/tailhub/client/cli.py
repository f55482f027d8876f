"""`tailhub`: the command line. A thin layer: flags in, client library calls, one-line errors
and documented exit codes out (see exit_codes.py). Never a traceback."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from tailhub.client import exit_codes
from tailhub.client._cli_common import HOME_HELP
from tailhub.client._daemon_cli import daemon
from tailhub.client._doctor_cli import doctor
from tailhub.client._jobs_cli import jobs
from tailhub.client._output import note
from tailhub.client._tokens_cli import token
from tailhub.client._web_cli import web


class _Commands(click.Group):
    """The top group: a reader that went away (`| head`) ends the command quietly, with 0.

    Caught here because click's own handler would turn it into exit code 1.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _drop_stdout()
            sys.exit(exit_codes.SUCCEEDED)


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"]},
    # --version needs --home and --server first (an eager option would run before them).
    invoke_without_command=True,
    no_args_is_help=True,
    subcommand_metavar="COMMAND [ARGS]...",
)
@click.option(
    "--version",
    "show_version",
    is_flag=True,
    help="Show this CLI's version, and the daemon's and its API's if one answers "
    "(never starts one).",
)
@click.option("--home", metavar="DIR", help=HOME_HELP)
@click.option(
    "--server",
    metavar="HOST:PORT,...",
    envvar="TAILHUB_SERVER",
    help="A daemon's --listen address, or a cluster's daemons in order of preference "
    "(default: this machine's socket). Env TAILHUB_SERVER.",
)
@click.option(
    "--token-file", metavar="FILE", help="Token for --server (default: $TAILHUB_TOKEN itself)."
)
@click.option(
    "--ca-file", metavar="PEM", help="CA that signed --server's certificate (env TAILHUB_CA)."
)
@click.option("--client-cert", metavar="PEM", help="Client certificate, for mutual TLS.")
@click.option("--client-key", metavar="PEM", help="Its private key.")
@click.option("--insecure", is_flag=True, help="--server speaks plaintext (loopback only).")
def cli(show_version: bool, home: str | None, **remote: Any) -> None:
    """One log fetch per job, fanned out to every follower.

    Exit codes of commands that report a job's result: 0 succeeded, 100 failed,
    101 not finished, 102 not found, 103 cancelled, 104 no daemon answered, 105 token
    refused, 106 TLS failed, 2 bad usage. Something wrong? `tailhub doctor`.
    """
    ctx = click.get_current_context()
    if show_version:
        from tailhub.client._version import print_versions

        print_versions(home)
        ctx.exit(exit_codes.SUCCEEDED)
    if ctx.invoked_subcommand is None:
        raise click.UsageError("Missing command.")


cli.add_command(jobs)
cli.add_command(daemon)
cli.add_command(token)
cli.add_command(doctor)
cli.add_command(web)


def main() -> None:
    """Entry point: the library's errors become one line on stderr and an exit code."""
    try:
        _run()
    finally:
        # Output still buffered goes now, where a closed pipe can be told apart.
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _drop_stdout()
        except ValueError:  # stdout already closed
            pass


def _run() -> None:
    from tailhub.client._errors import TailhubError

    try:
        # The same completion variable however it was started (`python -m tailhub.client`).
        cli.main(standalone_mode=False, complete_var="_TAILHUB_COMPLETE")
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        sys.exit(exit_codes.INTERRUPTED)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except TailhubError as error:
        note(str(error))
        sys.exit(error.exit_code)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error worth a message.
        _drop_stdout()
        sys.exit(exit_codes.SUCCEEDED)
    except KeyboardInterrupt:
        sys.exit(exit_codes.INTERRUPTED)
    except OSError as error:
        note(f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}")
        sys.exit(exit_codes.ERROR)


def _drop_stdout() -> None:
    """Points stdout at /dev/null, so that the flush at exit cannot fail on a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
