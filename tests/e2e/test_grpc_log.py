"""grpc's record of a call cancelled by a stop reaches the daemon's log as one line, not a
traceback (a traceback there means a bug, and the suite fails on one)."""

from __future__ import annotations

import asyncio
import importlib
import logging

import pytest

from tailhub.daemon.grpc_log import ClientGoneFilter, quiet_client_gone_tracebacks


def _record_of(error: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "grpc._cython.cygrpc",
        logging.ERROR,
        __file__,
        1,
        "Exception not handled by _handle_exceptions in servicer method [%s]",
        ("/tailhub.v1.TailhubService/Publish",),
        (type(error), error, None),
    )


def test_a_cancelled_call_is_one_info_line() -> None:
    record = _record_of(asyncio.CancelledError())
    assert ClientGoneFilter().filter(record)
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert record.getMessage().endswith(
        "[/tailhub.v1.TailhubService/Publish]: the call was cancelled"
    )


def test_any_other_error_keeps_its_traceback() -> None:
    record = _record_of(ValueError("a real bug"))
    assert ClientGoneFilter().filter(record)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None


def test_grpc_prints_no_traceback_for_a_cancellation(capsys: pytest.CaptureFixture[str]) -> None:
    quiet_client_gone_tracebacks()
    core = importlib.import_module("grpc._cython.cygrpc")
    try:
        raise asyncio.CancelledError
    except asyncio.CancelledError:
        core.traceback.print_exc()
    try:
        raise ValueError("a real bug")
    except ValueError:
        core.traceback.print_exc()
    printed = capsys.readouterr().err
    assert "CancelledError" not in printed
    assert "ValueError: a real bug" in printed
