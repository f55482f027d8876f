"""One-time login codes (web/login.py): once, for two minutes, bounded."""

from __future__ import annotations

from tailhub.daemon.web.login import CODE_SECONDS, MAX_CODES, LoginCodes
from tailhub.daemon.web.sessions import OWNER, Identity

NOW = 1_800_000_000.0


def test_a_code_works_once_for_whom_it_was_made() -> None:
    codes = LoginCodes()
    reader = Identity("reader", "ab" * 32)
    code, expires = codes.create(reader, NOW)
    assert expires == NOW + CODE_SECONDS
    assert codes.redeem(code, NOW + 1) == reader
    assert codes.redeem(code, NOW + 2) is None


def test_an_expired_unknown_or_oversized_code_is_refused() -> None:
    codes = LoginCodes()
    code, _ = codes.create(OWNER, NOW)
    assert codes.redeem(code, NOW + CODE_SECONDS) is None
    assert codes.redeem("not-a-code", NOW) is None
    assert codes.redeem("", NOW) is None
    assert codes.redeem("x" * 10_000, NOW) is None


def test_codes_are_random_and_kept_only_as_hashes() -> None:
    codes = LoginCodes()
    made = {codes.create(OWNER, NOW)[0] for _ in range(100)}
    assert len(made) == 100
    assert all(len(code) >= 43 for code in made)  # 256 bits, URL-safe
    held = repr(vars(codes))
    assert not any(code in held for code in made)


def test_waiting_codes_are_bounded_the_oldest_dropped_first() -> None:
    codes = LoginCodes()
    first, _ = codes.create(OWNER, NOW)
    for _ in range(MAX_CODES):
        last, _ = codes.create(OWNER, NOW)
    assert len(codes) == MAX_CODES
    assert codes.redeem(first, NOW) is None
    assert codes.redeem(last, NOW) == OWNER


def test_expired_codes_are_dropped_when_new_ones_are_made() -> None:
    codes = LoginCodes()
    for _ in range(10):
        codes.create(OWNER, NOW)
    codes.create(OWNER, NOW + CODE_SECONDS + 1)
    assert len(codes) == 1
