"""grpc's own log records, made fit for the daemon's log: an expected fault in one line.

When a client goes away while the daemon writes to its stream (a follower killed mid-read),
grpc's core logs ExecuteBatchError at ERROR with a traceback. The servicer already cleans up
in `finally`; for the daemon it is an ordinary event, so it becomes one INFO line, and a
traceback in the daemon's log keeps meaning a bug.
"""

from __future__ import annotations

import logging

_GRPC_CORE_LOGGER = "grpc._cython.cygrpc"
_CLIENT_GONE = "ExecuteBatchError"


class ClientGoneFilter(logging.Filter):
    """Turns grpc's "ExecuteBatchError raised in core" record into one line at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and type(error).__name__ == _CLIENT_GONE:
            record.msg = f"{record.getMessage()}: the client went away mid-write"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_client_gone_tracebacks() -> None:
    """Installs ClientGoneFilter on grpc's core logger (once per process)."""
    logger = logging.getLogger(_GRPC_CORE_LOGGER)
    if not any(isinstance(each, ClientGoneFilter) for each in logger.filters):
        logger.addFilter(ClientGoneFilter())
