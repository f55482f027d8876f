"""The `tailhub` command's entry point: defers unused imports, then runs the CLI."""

from __future__ import annotations

import gc
import sys

TYPE_CHECKING = False  # (typing's costs an import the lean path does without)
if TYPE_CHECKING:
    from collections.abc import Callable


def main() -> None:
    # The cyclic collector's passes over the objects the imports create, during them and again
    # at exit, were a fifth of a short command's CPU. Imports make no garbage worth collecting:
    # no passes while they run, then their objects are frozen (never traversed again). The
    # collector runs as usual for what the command creates (`jobs logs -f` may run for days).
    gc.disable()
    # `tailhub jobs logs` and `jobs launch` of this machine's daemon: without grpc or click
    # where the lean path covers the command line (see _lean.py); else, or when it finds it
    # cannot serve it (no daemon answers there...), the full CLI below, from the start.
    from tailhub.client._lean import lean_command

    lean = lean_command(sys.argv[1:])
    if lean is not None:
        gc.freeze()
        gc.enable()
        lean_code = lean()
        if lean_code is not None:
            gc.collect()
            sys.exit(lean_code)
        gc.disable()
    from tailhub.client._deferred import defer

    defer()
    from tailhub.client.cli import main as cli_main

    gc.freeze()
    gc.enable()
    code = _exit_code(cli_main)
    # What the command made is unreachable now (the exit's traceback, which held its frames
    # and their gRPC channels and calls, is gone too): freed here, while gRPC's threads still
    # run. Left to the interpreter's exit, their finalizers (which take locks those threads
    # take) ran after the threads had died, one of them holding such a lock: the command then
    # waited forever, having printed everything (issue 16, item 19).
    gc.collect()
    sys.exit(code)


def _exit_code(command: Callable[[], None]) -> int | str | None:
    """Runs `command`; what it exits with, without the exit's traceback."""
    try:
        command()
    except SystemExit as done:
        return done.code
    return None
