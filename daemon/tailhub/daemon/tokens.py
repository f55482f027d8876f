"""Access tokens for the network listeners: made and revoked by the CLI, checked by the daemon.

The store (`tokens.json` in the state directory, 0600) holds each token's sha256, never the
token: whoever reads the file cannot connect with it. A token is 256 random bits, so a plain
hash is enough (no salt or slow hash: nothing to guess). The CLI edits the file whether or not
a daemon runs (under a lock, replaced atomically); the daemon re-reads it when its stat
changes, checked on each call, so that a revocation holds for the next call.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tailhub.daemon.errors import TokenError, UntrustedState
from tailhub.daemon.paths import shown
from tailhub.daemon.statedir import ensure_private_dir, open_state_file, open_to_others

logger = logging.getLogger(__name__)

TOKENS_FILE = "tokens.json"
_LOCK_FILE = "tokens.lock"
# Shown in front of every token so that one pasted into a chat or a log is recognisable.
TOKEN_PREFIX = "thk_"  # noqa: S105 - a prefix, not a secret
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_TOKENS = 1000


class Role(enum.IntEnum):
    """What a token may do; each role can do everything the lower ones can."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    sha256: str
    created: float


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def tokens_path(home: Path) -> Path:
    return home / TOKENS_FILE


def read_tokens(home: Path) -> list[TokenEntry]:
    """The tokens of the store (none when there is no store); TokenError if it is unreadable."""
    path = tokens_path(home)
    try:
        fd = open_state_file(path, os.O_RDONLY, create=False)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as file:
        # Whoever can write it can add an admin token (code run as us): fail closed.
        fault = open_to_others(os.fstat(file.fileno()), path, secret=True)
        if fault is not None:
            raise TokenError(f"refusing {path}: {fault}")
        raw = file.read(4 * 1024 * 1024)
    return _parse(raw, path)


def _parse(raw: bytes, path: Path) -> list[TokenEntry]:
    try:
        document = json.loads(raw)
        entries = [
            TokenEntry(
                name=str(item["name"]),
                role=Role[str(item["role"]).upper()],
                sha256=str(item["sha256"]),
                created=float(item["created"]),
            )
            for item in document["tokens"]
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise TokenError(f"{path} is not a token store tailhub wrote ({error!r})") from None
    return entries


def _write(home: Path, entries: list[TokenEntry]) -> None:
    """Replaces the store at once: a reader sees the old file or the new one, never half."""
    document = {
        "tokens": [
            {
                "name": entry.name,
                "role": entry.role.label,
                "sha256": entry.sha256,
                "created": entry.created,
            }
            for entry in entries
        ]
    }
    path = tokens_path(home)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = open_state_file(temporary, os.O_WRONLY | os.O_TRUNC)
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(document, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One editor of the store at a time (two `token create` at once both land)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    ensure_private_dir(home)
    fd = open_state_file(home / _LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def create_token(home: Path, role: Role, name: str | None = None) -> tuple[str, TokenEntry]:
    """A new token (returned once, never stored) and its entry in the store."""
    if name is not None and not _NAME.fullmatch(name):
        raise TokenError(
            "a token name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    with _locked(home):
        entries = read_tokens(home)
        if len(entries) >= MAX_TOKENS:
            raise TokenError(f"there are already {MAX_TOKENS} tokens; revoke some first")
        names = {entry.name for entry in entries}
        if name is None:
            number = len(entries) + 1
            while f"{role.label}-{number}" in names:
                number += 1
            name = f"{role.label}-{number}"
        elif name in names:
            raise TokenError(f"a token named {name!r} exists; revoke it first or choose another")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        entry = TokenEntry(name, role, token_hash(token), time.time())
        _write(home, [*entries, entry])
    return token, entry


def revoke_token(home: Path, name: str) -> bool:
    """Removes the token named `name`; False if there is none."""
    with _locked(home):
        entries = read_tokens(home)
        kept = [entry for entry in entries if entry.name != name]
        if len(kept) == len(entries):
            return False
        _write(home, kept)
    return True


class TokenIndex:
    """The daemon's view of the store, re-read when the file changes (checked on each call)."""

    def __init__(self, home: Path) -> None:
        self._path = tokens_path(home)
        self._home = home
        self._stamp: tuple[int, int, int, int] | None = None
        self._entries: list[TokenEntry] = []

    def role_of(self, token: str) -> tuple[str, Role] | None:
        """The name and role of `token`; None when it is not in the store."""
        self._refresh()
        presented = token_hash(token)
        found: TokenEntry | None = None
        # Every entry is compared, in constant time each: the time taken says nothing of
        # which stored hash (if any) shares a prefix with the presented one.
        for entry in self._entries:
            if hmac.compare_digest(entry.sha256, presented):
                found = entry
        return None if found is None else (found.name, found.role)

    def entry_named(self, name: str) -> TokenEntry | None:
        """The token named `name` as the store holds it now; None once it is revoked (the web
        view's sessions end with their token)."""
        self._refresh()
        return next((entry for entry in self._entries if entry.name == name), None)

    def _refresh(self) -> None:
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            self._stamp, self._entries = None, []
            return
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._entries = read_tokens(self._home)
        except (TokenError, UntrustedState, OSError) as error:
            # Fails closed: no token is valid until the store is fixed.
            logger.error("no token accepted until %s is fixed: %s", shown(self._path), error)
            self._entries = []
