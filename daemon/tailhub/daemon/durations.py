"""Durations as people type them: `30m`, `12h`, `7d` (shared by `tailhubd` and `tailhub`)."""

from __future__ import annotations

import math
import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def parse_duration(text: str) -> float:
    """Seconds in `text`: a number with an optional unit (s, m, h, d, w); a bare number is
    seconds. Raises ValueError with a message fit for a user."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 30m, 12h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds > 100 * 365 * 86400:
        raise ValueError(f"{text!r} is too long a duration")
    return seconds
