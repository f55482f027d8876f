"""Sizes as people type them (sizes.py): binary units, refused with a message otherwise."""

from __future__ import annotations

import pytest

from tailhub.daemon.sizes import parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("512", 512),
        ("4K", 4096),
        ("500M", 500 * 1024**2),
        ("20g", 20 * 1024**3),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("2 MB", 2 * 1024**2),
        (" 1T ", 1024**4),
    ],
)
def test_sizes_are_read_in_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1M", "5X", "1e3", "ten"])
def test_what_is_not_a_size_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size \\(examples: 500M"):
        parse_size(text)


def test_a_typo_with_too_many_digits_is_refused_not_taken_as_no_limit() -> None:
    with pytest.raises(ValueError, match="too large a size"):
        parse_size("2000000T")
