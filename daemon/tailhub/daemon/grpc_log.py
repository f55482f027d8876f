"""grpc's own log records, made fit for the daemon's log: an expected fault in one line.

When a client goes away while the daemon writes to its stream (a follower killed mid-read),
grpc's core logs ExecuteBatchError at ERROR with a traceback. The servicer already cleans up
in `finally`; for the daemon it is an ordinary event, so it becomes one INFO line, and a
traceback in the daemon's log keeps meaning a bug.

Likewise when the daemon stops while a call is still being scheduled (a publisher's call
arriving during the stop grace): grpc cancels it and logs the CancelledError with a
traceback, though cancelling it is exactly what a stop means.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import traceback
from typing import Any

_GRPC_CORE_LOGGER = "grpc._cython.cygrpc"
_CLIENT_GONE = "ExecuteBatchError"


class ClientGoneFilter(logging.Filter):
    """Turns grpc's record of a call ended from outside (the client gone, or the call
    cancelled by a stop) into one line at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        if type(error).__name__ == _CLIENT_GONE:
            reason = "the client went away mid-write"
        elif isinstance(error, asyncio.CancelledError):
            reason = "the call was cancelled"
        else:
            return True
        record.msg = f"{record.getMessage()}: {reason}"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class _TracebackWithoutCancellations:
    """The `traceback` module as grpc's core sees it, minus cancellations.

    Beside its log record, grpc prints the same CancelledError with `traceback.print_exc()`
    straight to stderr (the daemon's log); a logging filter cannot reach that copy.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)

    def print_exc(self, *args: Any, **kwargs: Any) -> None:
        if not isinstance(sys.exc_info()[1], asyncio.CancelledError):
            traceback.print_exc(*args, **kwargs)


def quiet_client_gone_tracebacks() -> None:
    """Installs ClientGoneFilter on grpc's core logger (once per process)."""
    logger = logging.getLogger(_GRPC_CORE_LOGGER)
    if not any(isinstance(each, ClientGoneFilter) for each in logger.filters):
        logger.addFilter(ClientGoneFilter())
    core = importlib.import_module(_GRPC_CORE_LOGGER)
    if getattr(core, "traceback", None) is traceback:
        setattr(core, "traceback", _TracebackWithoutCancellations())  # noqa: B010
