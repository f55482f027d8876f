"""How long a launch waits for its daemon, and what it says: shared by the gRPC and lean paths.

A launch carries a key (LaunchJob's launch_key), so it can be sent again without being run
twice: a daemon that does not answer in time is asked again, with the same key, until the
launch's patience is spent. Standard library only (the lean path imports it).
"""

from __future__ import annotations

import os

# One call's deadline (seconds) before it is made again with the same key.
CALL_TIMEOUT = 30.0
# How long, in all, a launch calls its daemon again while the daemon does not answer in time:
# busy (a load of CLIs on a small machine), or restarting.
LAUNCH_PATIENCE = 300.0
# Said once, on stderr, when the first call's deadline has passed.
SLOW = "the daemon is slow to answer; still waiting"
_MAX_SECONDS = 86400.0


def seconds(variable: str, default: float) -> float:
    """$`variable` as seconds (above 0, at most a day), else `default`; ValueError if not."""
    text = os.environ.get(variable, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= _MAX_SECONDS:  # (NaN too)
        raise ValueError(f"{variable}={text[:32]!r}: seconds, above 0 and at most 86400")
    return value


def gave_up(problem: str, patience: float, key: str) -> str:
    """What a launch that stopped waiting for its daemon says: it may have been launched."""
    return (
        f"{problem}; gave up after {patience:.0f} s: the job may have been launched all the "
        "same (see `tailhub jobs queue`); to follow it, if it was, rather than launch it "
        f"twice, run `tailhub jobs launch` again with --launch-key {key}"
    )
