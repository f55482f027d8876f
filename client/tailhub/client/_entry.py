"""The `tailhub` command's entry point: defers unused imports, then runs the CLI."""

from __future__ import annotations


def main() -> None:
    from tailhub.client._deferred import defer

    defer()
    from tailhub.client.cli import main as cli_main

    cli_main()
