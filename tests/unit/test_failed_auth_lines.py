"""The daemon-wide bound on lines about failed authentications (failed_auth.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tailhub.daemon.failed_auth import FailedAuthLimit


def test_lines_naming_addresses_are_bounded_per_minute_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]

    async def run() -> None:
        limit = FailedAuthLimit(clock=lambda: now[0], lines_per_minute=3)
        for n in range(5):
            limit.failed(f"127.0.0.{n}", "token not accepted")
        now[0] = 61.0  # a new minute: an address is named again
        limit.failed("127.0.1.1", "token not accepted")
        limit.close()

    with caplog.at_level(logging.WARNING, "tailhub.daemon.failed_auth"):
        asyncio.run(run())
    lines = [record.getMessage() for record in caplog.records]
    named = [line for line in lines if line.startswith("failed authentication from ")]
    assert [line.split()[3] for line in named] == [
        "127.0.0.0:",
        "127.0.0.1:",
        "127.0.0.2:",
        "127.0.1.1:",
    ]
    counted = [line for line in lines if "more failed authentications from" in line]
    assert len(counted) == 1, lines
    assert "2 more failed authentications from 2 addresses" in counted[0], counted
