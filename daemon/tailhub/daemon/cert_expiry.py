"""Warnings about the TLS certificate the listeners serve: at start when it has expired or
expires within two weeks, then again every day while the daemon runs.

The certificate is read once, at start (a renewed file is served only after a restart), so
its end of validity is fixed; what changes is how close it is. An expired one is served all
the same: refusing to start would take the owner's Unix socket down with it, and the clients'
own check already refuses the connection (the CLI names the date).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from tailhub.daemon.facts import ListenerFacts
from tailhub.daemon.faults import CERTIFICATE_CHECK
from tailhub.daemon.supervisor import Supervisor

logger = logging.getLogger(__name__)

WARN_BEFORE_S = 14 * 86400
CHECK_EVERY_S = 86400.0


def shown_date(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def expiry_warning(path: str, addresses: Sequence[str], not_after: float, now: float) -> str | None:
    """What to tell the operator about a certificate valid until `not_after`; None if nothing."""
    served = f"{path or 'the TLS certificate'} (served on {', '.join(addresses)})"
    if not_after <= now:
        return (
            f"{served} expired on {shown_date(not_after)}: clients refuse to connect; renew it "
            "(tailhub daemon tls-init makes a new one) and restart tailhubd"
        )
    if not_after - now <= WARN_BEFORE_S:
        days = (not_after - now) / 86400
        return (
            f"{served} expires on {shown_date(not_after)}, in {days:.1f} days: renew it and "
            "restart tailhubd before then"
        )
    return None


class CertificateWatch:
    """Logs the listeners' certificate warnings now and every `every` seconds (an essential
    task: supervisor.py)."""

    def __init__(
        self,
        listeners: Sequence[ListenerFacts],
        every: float = CHECK_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Listeners serve one certificate; grouped anyway, by file and end of validity.
        served: dict[tuple[str, float], list[str]] = {}
        for listener in listeners:
            if listener.certificate_not_after is not None:
                key = (listener.certificate_path, listener.certificate_not_after)
                served.setdefault(key, []).append(listener.address)
        self._served = served
        self._every = every
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._essentials = Supervisor()

    def start(self, essentials: Supervisor | None = None) -> None:
        """Warns now if there is cause, and keeps checking while there is a certificate."""
        self.check()
        if essentials is not None:
            self._essentials = essentials
        if self._served:
            self._task = self._essentials.spawn(self._run(), name=CERTIFICATE_CHECK)

    def check(self) -> None:
        now = self._clock()
        for (path, not_after), addresses in self._served.items():
            warning = expiry_warning(path, addresses, not_after, now)
            if warning is not None:
                logger.warning("%s", warning)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            self.check()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await self._essentials.cancel([task])
