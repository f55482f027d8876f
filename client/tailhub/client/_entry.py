"""The `tailhub` command's entry point: defers unused imports, then runs the CLI."""

from __future__ import annotations

import gc


def main() -> None:
    # The cyclic collector's passes over the objects the imports create, during them and again
    # at exit, were a fifth of a short command's CPU. Imports make no garbage worth collecting:
    # no passes while they run, then their objects are frozen (never traversed again). The
    # collector runs as usual for what the command creates (`jobs logs -f` may run for days).
    gc.disable()
    from tailhub.client._deferred import defer

    defer()
    from tailhub.client.cli import main as cli_main

    gc.freeze()
    gc.enable()
    cli_main()
