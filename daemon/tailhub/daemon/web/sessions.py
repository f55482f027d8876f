"""The web view's sessions: a signed cookie naming who logged in, and until when.

The cookie holds the identity that asked for the login code (a token's name and hash on a
TCP listener, or the daemon's owner on the Unix socket) and an expiry, encrypted (ChaCha20, so
that whoever sees the cookie learns nothing of the token) and then signed with HMAC-SHA256,
under a key kept in the state directory (`web-session.key`, 0600, made on first use): a
session survives a daemon restart, and deleting the key ends every session. A token's session
is checked against the token store at each request, so revoking the token ends it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from tailhub.daemon.errors import UntrustedState
from tailhub.daemon.paths import StatePaths, shown
from tailhub.daemon.statedir import open_state_file, open_to_others
from tailhub.daemon.tokens import TokenIndex

KEY_FILE = "web-session.key"
KEY_BYTES = 32
COOKIE_NAME = "tailhub_session"
SESSION_SECONDS = 12 * 3600.0
# Far above what this module writes (about 250 bytes): anything longer is not ours.
MAX_COOKIE_CHARS = 1024
NONCE_BYTES = 16  # ChaCha20's (a 4-byte counter and a 12-byte nonce, random)


@dataclass(frozen=True)
class Identity:
    """Who a session reads as: a token (its name, and the hash the store holds), or the owner."""

    token_name: str | None = None
    token_sha256: str = ""

    @property
    def key(self) -> str:
        """Its name in the stream limits: one token's sessions share them."""
        return "owner" if self.token_name is None else f"token:{self.token_name}"


OWNER = Identity()


def load_key(paths: StatePaths) -> bytes:
    """The signing key, made (random, 0600) the first time; UntrustedState when the file is
    not a private file of ours."""
    path = paths.root / KEY_FILE
    fd = open_state_file(path, os.O_RDWR)
    with os.fdopen(fd, "r+b") as file:
        fault = open_to_others(os.fstat(file.fileno()), path, secret=True)
        if fault is not None:
            raise UntrustedState(f"refusing {shown(path)}: {fault}")
        key = file.read(KEY_BYTES + 1)
        if len(key) != KEY_BYTES:  # new, or torn by a crash while it was made
            key = secrets.token_bytes(KEY_BYTES)
            file.seek(0)
            file.truncate()
            file.write(key)
            file.flush()
            os.fsync(file.fileno())
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieSigner:
    """Makes and reads session cookies under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        # Its own key for the encryption, derived from the signing key.
        self._secret = hmac.new(key, b"tailhub-web-session-cipher", hashlib.sha256).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, b"tailhub-web-session\0" + payload, hashlib.sha256).digest()

    def _cipher(self, nonce: bytes) -> Cipher[None]:
        return Cipher(algorithms.ChaCha20(self._secret, nonce), mode=None)

    def make(self, identity: Identity, now: float) -> str:
        """A cookie value for `identity`, valid SESSION_SECONDS from `now`."""
        document = {
            "v": 1,
            "t": identity.token_name,
            "h": identity.token_sha256,
            "e": round(now + SESSION_SECONDS, 3),
            "n": secrets.token_urlsafe(8),
        }
        payload = json.dumps(document, separators=(",", ":")).encode()
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = nonce + self._cipher(nonce).encryptor().update(payload)
        return f"{_b64(sealed)}.{_b64(self._mac(sealed))}"

    def read(self, value: str | None, now: float) -> Identity | None:
        """The identity of a cookie this key signed that has not expired; None otherwise."""
        if not value or len(value) > MAX_COOKIE_CHARS or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        try:
            sealed = _unb64(body)
            signature = _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(signature, self._mac(sealed)) or len(sealed) <= NONCE_BYTES:
            return None
        nonce, encrypted = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            document = json.loads(self._cipher(nonce).decryptor().update(encrypted))
        except ValueError:
            return None
        return _identity_of(document, now)


def _identity_of(document: object, now: float) -> Identity | None:
    if not isinstance(document, dict) or document.get("v") != 1:
        return None
    expires, name, sha256 = document.get("e"), document.get("t"), document.get("h")
    if not isinstance(expires, (int, float)) or expires <= now:
        return None
    if name is None:
        return OWNER
    if not isinstance(name, str) or not isinstance(sha256, str) or not sha256:
        return None
    return Identity(name, sha256)


def still_valid(identity: Identity, tokens: TokenIndex) -> bool:
    """The owner's sessions hold until they expire; a token's while the store holds it."""
    if identity.token_name is None:
        return True
    entry = tokens.entry_named(identity.token_name)
    return entry is not None and hmac.compare_digest(entry.sha256, identity.token_sha256)


def identity_of_caller(token_name: str | None, tokens: TokenIndex) -> Identity | None:
    """The identity of a gRPC caller (callers.token(): None for the owner on the socket);
    None when its token is gone already."""
    if token_name is None:
        return OWNER
    entry = tokens.entry_named(token_name)
    return None if entry is None else Identity(entry.name, entry.sha256)


def key_path(paths: StatePaths) -> Path:
    return paths.root / KEY_FILE
