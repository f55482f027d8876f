"""Reading the CLI's credential files (token, CA, client certificate and key), as ssh reads a
key: bounded, regular files only, and a token others could read, change or replace refused."""

from __future__ import annotations

import os
import stat

from tailhub.client._errors import AccessDenied, TailhubError

# Certificates, keys and tokens are a few KiB: a larger file is a wrong path (or /dev/zero).
MAX_CREDENTIAL_FILE_BYTES = 1024 * 1024


def read_credential(path: str, what: str, *, private: bool = False) -> bytes:
    """A credential file's bytes: a regular file (never a FIFO that would block), bounded.
    A `private` one (a token) others can read or write is refused, as ssh refuses such a key:
    whoever could read it has the token already."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            facts = os.fstat(file.fileno())
            if not stat.S_ISREG(facts.st_mode):
                raise TailhubError(f"the {what} {path} is not a regular file")
            if private:
                _check_private(path, what, facts)
            data = file.read(MAX_CREDENTIAL_FILE_BYTES + 1)
    except OSError as error:
        raise TailhubError(f"cannot read the {what} {path}: {error.strerror or error}") from None
    if len(data) > MAX_CREDENTIAL_FILE_BYTES:
        raise TailhubError(f"the {what} {path} is over 1 MiB: not a {what}")
    return data


def _check_private(path: str, what: str, facts: os.stat_result) -> None:
    """AccessDenied for a file others can read or write, or could replace: one of another
    user, a link of another user's to it, or one in a directory others may write."""
    if facts.st_mode & 0o077:
        mode = stat.S_IMODE(facts.st_mode)
        raise AccessDenied(
            f"the {what} {path} can be read or written by others (mode {mode:04o}): "
            f"chmod 600 {path}, and make a new token if others may have read it"
        )
    mine = (os.geteuid(), 0)
    link = os.lstat(path)
    for owner in (facts.st_uid, link.st_uid):
        if owner not in mine:
            raise AccessDenied(
                f"the {what} {path} is owned by uid {owner}, not by you: that user could "
                "change it; keep your token in a file of your own (chmod 600)"
            )
    # The link's directory, and the file's where a link leads.
    for where in {os.path.abspath(path), os.path.realpath(path)}:
        folder = os.stat(os.path.dirname(where))
        if folder.st_mode & 0o022 and not folder.st_mode & stat.S_ISVTX:
            raise AccessDenied(
                f"the {what} {path} is in a directory others may write to, where they could "
                "replace it: keep it in a directory of your own"
            )
