"""The web view's session cookie (web/sessions.py): signed, expiring, tied to a token."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tailhub.daemon.errors import UntrustedState
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.tokens import Role, TokenIndex, create_token, revoke_token
from tailhub.daemon.web.sessions import (
    KEY_BYTES,
    KEY_FILE,
    OWNER,
    SESSION_SECONDS,
    CookieSigner,
    Identity,
    identity_of_caller,
    load_key,
    still_valid,
)

NOW = 1_800_000_000.0


def home(tmp_path: Path) -> StatePaths:
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    return StatePaths(path)


def test_a_cookie_reads_back_as_its_identity_until_it_expires() -> None:
    signer = CookieSigner(b"k" * 32)
    reader = Identity("reader", "ab" * 32)
    for identity in (OWNER, reader):
        cookie = signer.make(identity, NOW)
        assert signer.read(cookie, NOW + SESSION_SECONDS - 1) == identity
        assert signer.read(cookie, NOW + SESSION_SECONDS) is None


def test_a_cookie_changed_or_signed_with_another_key_is_refused() -> None:
    signer = CookieSigner(b"k" * 32)
    cookie = signer.make(Identity("reader", "ab" * 32), NOW)
    body, mac = cookie.split(".")
    other = CookieSigner(b"o" * 32).make(Identity("reader", "ab" * 32), NOW)
    forged_body = other.split(".")[0]
    for value in (
        f"{forged_body}.{mac}",
        f"{body}.{mac[:-2]}AA",
        f"{body}.",
        body,
        other,
        "",
        None,
        "x" * 5000,
        "a.b.c",
        "!!!.???",
    ):
        assert signer.read(value, NOW) is None, value


def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    paths = home(tmp_path)
    key = load_key(paths)
    assert len(key) == KEY_BYTES
    info = os.stat(paths.home / KEY_FILE)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert load_key(paths) == key  # a restart reads the same key: sessions survive it


def test_a_torn_key_is_made_again_and_one_others_can_read_is_refused(tmp_path: Path) -> None:
    paths = home(tmp_path)
    path = paths.home / KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short")
    os.close(fd)
    assert len(load_key(paths)) == KEY_BYTES
    path.chmod(0o644)
    with pytest.raises(UntrustedState, match="others can read it"):
        load_key(paths)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UntrustedState, match="symbolic link"):
        load_key(paths)


def test_a_tokens_session_ends_with_the_token(tmp_path: Path) -> None:
    paths = home(tmp_path)
    create_token(paths.home, Role.READ, "reader")
    tokens = TokenIndex(paths.home)
    identity = identity_of_caller("reader", tokens)
    assert identity is not None
    assert identity.key == "token:reader"
    assert still_valid(identity, tokens)
    assert revoke_token(paths.home, "reader")
    assert not still_valid(identity, tokens)
    create_token(paths.home, Role.READ, "reader")  # the same name, another token
    assert not still_valid(identity, tokens)
    assert identity_of_caller(None, tokens) == OWNER
    assert still_valid(OWNER, tokens)


def test_a_cookie_says_nothing_of_its_token() -> None:
    import base64

    signer = CookieSigner(b"k" * 32)
    cookie = signer.make(Identity("reader-name", "cd" * 32), NOW)
    body = cookie.split(".")[0]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    for secret in (b"reader-name", b"cd" * 32, b'"t"'):
        assert secret not in raw
    assert "reader" not in cookie
    # Two logins of one token get unrelated cookies.
    assert signer.make(Identity("reader-name", "cd" * 32), NOW).split(".")[0][:20] != body[:20]
