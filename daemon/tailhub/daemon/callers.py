"""Who made the call being served: a token's name, or the Unix socket's owner.

The network listeners' interceptor (auth.py) sets it once it has checked the call's token;
the Unix socket's server has no interceptor, so there it stays None: the owner, whom no quota
limits. A context variable, because grpc.aio serves each call in a task of its own (a task
starts with a copy of the context): what one call sets, no other call sees.
"""

from __future__ import annotations

from contextvars import ContextVar

# The calling token's name; None for the owner (the Unix socket).
_TOKEN: ContextVar[str | None] = ContextVar("tailhub_caller_token", default=None)


def set_token(name: str) -> None:
    """Marks the call being served as made with the token named `name`."""
    _TOKEN.set(name)


def token() -> str | None:
    """The name of the token the call being served was made with; None for the owner."""
    return _TOKEN.get()
