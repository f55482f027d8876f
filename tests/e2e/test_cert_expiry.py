"""The daemon's warnings about its listeners' certificate, repeated while it runs (in-process:
the real interval is a day)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tailhub.daemon.cert_expiry import CertificateWatch, expiry_warning
from tailhub.daemon.facts import ListenerFacts

DAY = 86400.0


def test_warnings_name_the_date_and_only_near_or_past_the_end() -> None:
    now = 1_800_000_000.0
    listeners = ["127.0.0.1:9100"]
    assert expiry_warning("c.pem", listeners, now + 15 * DAY, now) is None
    soon = expiry_warning("c.pem", listeners, now + 3 * DAY, now)
    assert soon is not None
    assert "c.pem (served on 127.0.0.1:9100) expires on 2027-01-18" in soon
    assert "in 3.0 days" in soon
    past = expiry_warning("c.pem", listeners, now - DAY, now)
    assert past is not None
    assert "expired on 2027-01-14" in past


def test_a_watch_warns_at_start_and_again_at_each_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = 1_800_000_000.0
    facts = [
        ListenerFacts("127.0.0.1:1", "tls", "c.pem", now + 2 * DAY),
        ListenerFacts("[::1]:1", "tls", "c.pem", now + 2 * DAY),
    ]

    async def run() -> None:
        watch = CertificateWatch(facts, every=0.01, clock=lambda: now)
        watch.start()
        try:
            while len(caplog.records) < 3:
                await asyncio.sleep(0.01)
        finally:
            await watch.close()

    with caplog.at_level(logging.WARNING, logger="tailhub.daemon.cert_expiry"):
        asyncio.run(asyncio.wait_for(run(), 10))
    # One line per check for both listeners (they serve the same certificate).
    assert all("served on 127.0.0.1:1, [::1]:1" in r.getMessage() for r in caplog.records)
