"""Modules the command line's libraries import but its commands do not use, loaded on first use.

`import grpc` imports asyncio (from its Cython core) and grpc.aio, protobuf imports its
pure-Python message classes even when its C (upb) implementation is the one in use, and click
imports uuid. A `tailhub`
command uses none of them, yet they were about half of its start (see bench/cli_latency.py).
`defer()` puts a stand-in for each in `sys.modules` before they are imported; the first
attribute anyone asks of a stand-in imports the real module and answers from it. So the process
behaves the same, only without paying for what it never touches. For a program of its own only
(the CLI): a library must not change how its host process imports.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from typing import Any

# asyncio and grpc.aio: from `import grpc`; python_message: from protobuf's descriptor pool
# (upb in use); uuid (and platform, which it imports): from click, for its UUID option type.
DEFERRABLE = ("asyncio", "grpc.aio", "google.protobuf.internal.python_message", "uuid")


class _Deferred(types.ModuleType):
    """Stands in for a module in sys.modules until an attribute of it is asked for."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._load(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._load(), name)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def _load(self) -> types.ModuleType:
        # The import machinery locks per module: threads racing here all get the one module.
        with contextlib.suppress(KeyError):
            if sys.modules[self.__name__] is self:
                del sys.modules[self.__name__]
        module = importlib.import_module(self.__name__)
        if module is self:  # pragma: no cover - someone put the stand-in back
            raise ImportError(f"{self.__name__}: the deferred module cannot be loaded")
        return module


def defer(names: tuple[str, ...] = DEFERRABLE) -> list[str]:
    """Defers those of `names` not imported yet; returns them."""
    deferred = []
    for name in names:
        if name in sys.modules:  # too late: the real one is in use
            continue
        stand_in = _Deferred(name)
        if "." not in name:
            # The real spec (a path lookup, nothing run): importlib.util.find_spec(name), which
            # libraries use to probe for optional modules, raises on a module whose spec is
            # None. (A submodule's lookup would import its parent: left out.)
            object.__setattr__(stand_in, "__spec__", importlib.util.find_spec(name))
        sys.modules[name] = stand_in
        deferred.append(name)
    return deferred
