"""One-time login codes, as Jupyter's: `tailhub web` asks for one (CreateWebLogin), the browser
trades it at `/login?code=` for a session cookie.

A code is 256 random bits, kept only as its hash, in memory, for two minutes, and works once.
At most MAX_CODES wait at once (the oldest goes first): a reader asking for codes in a loop
holds a bounded amount of memory.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict

from tailhub.daemon.web.sessions import Identity

CODE_SECONDS = 120.0
MAX_CODES = 1000
# Longer than any code made here (43 characters): anything longer is refused unread.
MAX_CODE_CHARS = 128


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogateescape")).hexdigest()


class LoginCodes:
    def __init__(self) -> None:
        # hash -> (who asked, when it expires); oldest first.
        self._codes: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._codes)

    def create(self, identity: Identity, now: float) -> tuple[str, float]:
        """A new code for `identity` and when it expires."""
        self._drop_expired(now)
        while len(self._codes) >= MAX_CODES:
            self._codes.popitem(last=False)
        code = secrets.token_urlsafe(32)
        expires = now + CODE_SECONDS
        self._codes[_hash(code)] = (identity, expires)
        return code, expires

    def redeem(self, code: str, now: float) -> Identity | None:
        """The identity `code` was made for, once; None for a used, unknown or expired one."""
        if not code or len(code) > MAX_CODE_CHARS:
            return None
        found = self._codes.pop(_hash(code), None)
        if found is None or found[1] <= now:
            return None
        return found[0]

    def _drop_expired(self, now: float) -> None:
        while self._codes:
            _, (_, expires) = next(iter(self._codes.items()))
            if expires > now:
                return
            self._codes.popitem(last=False)
