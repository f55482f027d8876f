"""Sizes as people type them: `500M`, `20G`, `1.5GiB` (binary units: a K is 1024 bytes)."""

from __future__ import annotations

import re

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
# Larger than any disk: a typo with too many digits is refused, not taken as "no limit".
_MAX_BYTES = 1024**6


def parse_size(text: str) -> int:
    """Bytes in `text`: a number with an optional unit (K, M, G, T; KiB, MB... all binary);
    a bare number is bytes. Raises ValueError with a message fit for a user."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (examples: 500M, 20G, 1.5T)")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size > _MAX_BYTES:
        raise ValueError(f"{text!r} is too large a size")
    return size


def shown_size(count: int) -> str:
    """Bytes as people read them: `512B`, `1.5MiB`, `10.0GiB`."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{count}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"
