"""Durations as people type them (durations.py), shared by tailhubd and tailhub."""

from __future__ import annotations

import pytest

from tailhub.daemon.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("0.5s", 0.5),
        (" 1h ", 3600.0),
    ],
)
def test_durations_are_read_with_their_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-5m", "5 m", "1y", "1e3", "soon"])
def test_what_is_not_a_duration_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration \\(examples: 90s"):
        parse_duration(text)


def test_a_duration_beyond_a_century_is_refused() -> None:
    with pytest.raises(ValueError, match="too long a duration"):
        parse_duration("10000w")
