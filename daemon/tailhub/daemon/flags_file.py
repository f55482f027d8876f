"""`tailhubd --config FILE`: the daemon's flags in a YAML file (a service manager's config).

The file maps long option names (`max-running-jobs`, or `max_running_jobs`) to values; a
repeatable option (`listen`) takes a list. It becomes click's `default_map`, so a flag on the
command line (or its environment variable) wins over the file.

It may hold secrets (a Redis password in `redis:`, TLS key paths) and it steers what the
daemon runs, so it is distrusted like a state file: a regular file reached without a symlink,
owned by the daemon's user, that nobody else may read or write (0600 or 0400), and small.
Anything else stops the start with one line naming the file, the problem and its fix.
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import os
import shlex
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click
import yaml

from tailhub.daemon.errors import FlagsFileError

# Far more than every flag needs: a bigger file is not a config file.
MAX_BYTES = 64 * 1024
# Options that cannot come from the file: the file itself, help, and --check (a service
# manager's file with `check: true` would make its daemon exit 0 at every start).
_NOT_IN_FILE = ("config", "help", "check")


@dataclass(frozen=True)
class FlagsFile:
    """What was read: the values by click parameter name, and the file's identity."""

    path: str
    values: Mapping[str, Any]
    # Of the bytes read: `tailhub daemon start --config` tells an edited file from the one
    # a running daemon applied.
    sha256: str


_META_KEY = "tailhub.flags_file"


def apply_flags_file(ctx: click.Context, _param: click.Parameter, path: str | None) -> None:
    """The callback of an eager `--config` option: the file's values become the defaults of
    the command's other options. A file that cannot be used stops it: one line, exit 2."""
    if not path:
        return
    try:
        flags = read_flags_file(path, ctx.command.params)
    except FlagsFileError as error:
        click.echo(f"tailhubd: {error}", err=True)
        ctx.exit(2)
    ctx.default_map = {**(ctx.default_map or {}), **flags.values}
    ctx.meta[_META_KEY] = flags


def flags_file_of(ctx: click.Context) -> FlagsFile | None:
    """The file `apply_flags_file` read for this command, if any."""
    flags: FlagsFile | None = ctx.meta.get(_META_KEY)
    return flags


def read_flags_file(path: str, params: Sequence[click.Parameter]) -> FlagsFile:
    """The values `path` gives the options among `params`, checked; FlagsFileError if not."""
    path = os.path.abspath(path)
    data = _read_private(path)
    document = _parse(path, data)
    options = {name: param for param in params for name in _long_names(param)[:1]}
    values: dict[str, Any] = {}
    for key, value in document.items():
        if not isinstance(key, str):
            raise FlagsFileError(f"{path}: the key {key!r} is not an option name")
        name = key.replace("_", "-")
        param = options.get(name)
        if param is None or name in _NOT_IN_FILE:
            known = [known for known in options if known not in _NOT_IN_FILE]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FlagsFileError(
                f"{path}: unknown option {key!r}{hint}; the keys are tailhubd's long "
                "options (tailhubd --help): fix or remove it"
            )
        assert param.name is not None
        if param.name in values:
            raise FlagsFileError(f"{path}: {name!r} is given twice (as - and as _); keep one")
        values[param.name] = _checked(path, name, param, value)
    return FlagsFile(path, values, hashlib.sha256(data).hexdigest())


def _long_names(param: click.Parameter) -> list[str]:
    return [opt[2:] for opt in param.opts if opt.startswith("--")]


def _read_private(path: str) -> bytes:
    quoted = shlex.quote(path)
    try:
        # O_NOFOLLOW: never a symlink; O_NONBLOCK: a FIFO planted there cannot hang the start.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise FlagsFileError(
                f"refusing config file {path}: it is a symbolic link; "
                f"give the file itself (--config $(readlink -f {quoted}))"
            ) from None
        raise FlagsFileError(f"cannot read config file {path}: {error.strerror or error}") from None
    with os.fdopen(fd, "rb") as file:
        # The checks are of the file read (fstat), not of whatever the path names later.
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FlagsFileError(f"refusing config file {path}: it is not a regular file")
        user = os.geteuid()
        if info.st_uid != user:
            raise FlagsFileError(
                f"refusing config file {path}: it is owned by uid {info.st_uid}, not by the "
                f"daemon's user (uid {user}); fix: chown {user} {quoted}"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise FlagsFileError(
                f"refusing config file {path}: others may read or write it (mode {mode:04o}) "
                f"and it may hold secrets; fix: chmod 600 {quoted}"
            )
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise FlagsFileError(
            f"refusing config file {path}: larger than {MAX_BYTES // 1024} KiB; "
            "it should hold tailhubd's options only"
        )
    return data


def _parse(path: str, data: bytes) -> dict[Any, Any]:
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as error:
        raise FlagsFileError(f"{path}: malformed YAML{_where(error)}; fix the file") from None
    if document is None:  # empty, or comments only
        return {}
    if not isinstance(document, dict):
        raise FlagsFileError(
            f"{path}: expected a mapping of option names to values (e.g. `listen: "
            f"[0.0.0.0:7443]`), not a {type(document).__name__}"
        )
    return document


def _where(error: yaml.YAMLError) -> str:
    """` at line L, column C: PROBLEM` on one line (PyYAML's own text spans several)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{at}: {problem}" if problem else at


def _checked(path: str, name: str, param: click.Parameter, value: object) -> object:
    """`value` once it has the type the option takes (and passes click's own checks)."""
    if param.multiple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(_scalar(item) for item in items):
            raise FlagsFileError(f"{path}: `{name}` takes a list (e.g. `{name}: [A, B]`)")
        return [_converted(path, name, param, item) for item in items]
    if isinstance(param, click.Option) and param.is_flag:
        if not isinstance(value, bool):
            raise FlagsFileError(f"{path}: `{name}` is a flag: give true or false")
        return value
    if not _scalar(value):
        raise FlagsFileError(f"{path}: `{name}` takes one value, not a list or mapping")
    return _converted(path, name, param, value)


def _scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _converted(path: str, name: str, param: click.Parameter, value: object) -> object:
    kind = param.type
    if isinstance(kind, click.types.IntParamType):
        wanted: tuple[type, ...] = (int,)
    elif isinstance(kind, click.types.FloatParamType):
        wanted = (int, float)
    else:
        wanted = (str,)
    if not isinstance(value, wanted):
        what = "a string (quote it)" if wanted == (str,) else "a number"
        raise FlagsFileError(f"{path}: `{name}` takes {what}, not {_shown(value)}")
    try:
        converted = kind.convert(value, param, None)
        if param.callback is not None:  # its own checks (`metrics-listen` is HOST:PORT)
            param.callback(click.get_current_context(), param, converted)
    except click.BadParameter as error:
        raise FlagsFileError(f"{path}: `{name}`: {error.format_message()}") from None
    return converted


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
