"""The daemon's log writes text from outside (a job's stderr events, names, reasons) with its
control characters escaped: reading the log with `tail` cannot drive the reader's terminal."""

from __future__ import annotations

import logging

from tailhub.daemon.daemon_log import EscapingFormatter


def test_terminal_controls_in_a_log_line_are_escaped_and_lines_stay_lines() -> None:
    formatter = EscapingFormatter("%(message)s")
    hostile = "job 3: \x1b]0;TITLE\x07\x1b]52;c;Y2xpcA==\x07\x1b[2J\r\x00 \u202eevil\x9b"
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, hostile, None, None)
    line = formatter.format(record)
    assert line == (
        "job 3: \\x1b]0;TITLE\\x07\\x1b]52;c;Y2xpcA==\\x07\\x1b[2J\\r\\x00 \\u202eevil\\x9b"
    )
    # A traceback's newlines and indentation are the log's own.
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "a\n\tb", None, None)
    assert formatter.format(record) == "a\n\tb"
