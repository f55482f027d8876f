"""Access tokens (tokens.py): made and revoked by the CLI, checked by the daemon."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tailhub.daemon.errors import TokenError
from tailhub.daemon.tokens import (
    TOKEN_PREFIX,
    Role,
    TokenIndex,
    create_token,
    read_tokens,
    revoke_token,
    tokens_path,
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_a_new_token_is_recognised_with_its_name_and_role(home: Path) -> None:
    token, entry = create_token(home, Role.WRITE, "ci")
    assert token.startswith(TOKEN_PREFIX)
    assert (entry.name, entry.role) == ("ci", Role.WRITE)
    assert TokenIndex(home).role_of(token) == ("ci", Role.WRITE)
    assert TokenIndex(home).role_of(token + "x") is None


def test_the_store_holds_the_tokens_hash_never_the_token(home: Path) -> None:
    token, _ = create_token(home, Role.ADMIN)
    text = tokens_path(home).read_text()
    assert token not in text
    assert token[len(TOKEN_PREFIX) :] not in text
    assert os.stat(tokens_path(home)).st_mode & 0o777 == 0o600


def test_unnamed_tokens_are_named_after_their_role_and_never_twice_the_same(
    home: Path,
) -> None:
    names = [create_token(home, Role.READ)[1].name for _ in range(2)]
    revoke_token(home, "read-1")
    names.append(create_token(home, Role.READ)[1].name)
    assert names == ["read-1", "read-2", "read-3"]
    assert [entry.name for entry in read_tokens(home)] == ["read-2", "read-3"]


def test_a_revoked_token_is_refused_on_the_next_call(home: Path) -> None:
    token, _ = create_token(home, Role.READ, "laptop")
    index = TokenIndex(home)
    assert index.role_of(token) == ("laptop", Role.READ)
    assert revoke_token(home, "laptop")
    assert index.role_of(token) is None
    assert not revoke_token(home, "laptop")


def test_a_name_taken_already_is_refused(home: Path) -> None:
    create_token(home, Role.READ, "ci")
    with pytest.raises(TokenError, match="a token named 'ci' exists"):
        create_token(home, Role.ADMIN, "ci")


@pytest.mark.parametrize("name", ["", "-leading-dash", "has space", "x" * 65, "é"])
def test_a_token_name_outside_the_allowed_characters_is_refused(home: Path, name: str) -> None:
    with pytest.raises(TokenError, match="a token name is 1-64 letters"):
        create_token(home, Role.READ, name)


def test_a_store_tailhub_did_not_write_accepts_no_token_at_all(home: Path) -> None:
    token, _ = create_token(home, Role.ADMIN, "admin")
    tokens_path(home).write_text(json.dumps({"tokens": [{"name": "x"}]}))
    with pytest.raises(TokenError, match="is not a token store tailhub wrote"):
        read_tokens(home)
    assert TokenIndex(home).role_of(token) is None  # fails closed


def test_a_store_others_can_write_accepts_no_token_at_all(home: Path) -> None:
    token, _ = create_token(home, Role.ADMIN, "admin")
    os.chmod(tokens_path(home), 0o666)
    with pytest.raises(TokenError, match="refusing"):
        read_tokens(home)
    assert TokenIndex(home).role_of(token) is None


def test_without_a_store_there_are_no_tokens(home: Path) -> None:
    assert read_tokens(home) == []
    assert TokenIndex(home).role_of(TOKEN_PREFIX + "anything") is None


def test_roles_include_everything_the_lower_ones_can_do() -> None:
    assert Role.READ < Role.WRITE < Role.ADMIN
    assert [role.label for role in Role] == ["read", "write", "admin"]
