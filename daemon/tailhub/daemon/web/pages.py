"""The page and its files: `/`, `/jobs/{id}` and `/jobs` all serve `static/app.html` (its
script routes on the path); `/static/{file}`; `/login?code=`, which trades a one-time code for
the session cookie; and the short pages said instead when there is no session."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

from aiohttp import web

from tailhub.daemon.web.sessions import COOKIE_NAME, SESSION_SECONDS, still_valid
from tailhub.daemon.web.state import state_of

STATIC = Path(__file__).parent / "static"
# A name in static/, nothing else: no path, no dot file.
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
MAX_ASSET_BYTES = 4 * 1024 * 1024
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain",
    ".map": "application/json",
}

NO_SESSION = "Run <code>tailhub web</code> to get a login link."
WRONG_HOST = (
    "The web view answers only at its own address: open the link <code>tailhub web</code> prints."
)
BAD_CODE = (
    "This login link was used already, or it expired (a link works once, for two minutes). "
    "Run <code>tailhub web</code> again for a new one."
)


def short_page(status: int, title: str, message: str) -> web.Response:
    """A page of one paragraph, no script and no style (the CSP allows neither inline)."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>tailhub: {title}</title></head><body><h1>{title}</h1>"
        f"<p>{message}</p></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html")


def no_session() -> web.Response:
    return short_page(401, "not logged in", NO_SESSION)


def wrong_host() -> web.Response:
    return short_page(421, "wrong host", WRONG_HOST)


def _asset(name: str) -> tuple[bytes, str] | None:
    """The bytes and content type of static/NAME; None when there is no such file."""
    if not _ASSET_NAME.fullmatch(name):
        return None
    kind = _TYPES.get(Path(name).suffix)
    path = STATIC / name
    if kind is None or not path.is_file() or path.stat().st_size > MAX_ASSET_BYTES:
        return None
    data = path.read_bytes()
    return data, kind


def _served(request: web.Request, name: str) -> web.Response:
    found = _asset(name)
    if found is None:
        return short_page(404, "not found", "There is no such file.")
    data, kind = found
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if kind.startswith("text/") or kind.endswith("+xml") else None
    return web.Response(body=data, content_type=kind, charset=charset, headers=headers)


async def app_page(request: web.Request) -> web.Response:
    """`/`, `/jobs/{id}`, `/jobs`: the one page."""
    return _served(request, "app.html")


async def asset(request: web.Request) -> web.Response:
    """`/static/{file}` (served without a session: it holds no job's data)."""
    return _served(request, request.match_info["file"])


async def login(request: web.Request) -> web.Response:
    """`/login?code=CODE`: the session cookie, then `303` to `/` (the code leaves the
    address bar); 403 for a used, unknown or expired code."""
    state = state_of(request)
    now = time.time()
    identity = state.codes.redeem(request.query.get("code", ""), now)
    # A code made before its token was revoked is no way back in.
    if identity is None or not still_valid(identity, state.tokens):
        return short_page(403, "login link not valid", BAD_CODE)
    response = web.Response(status=303, headers={"Location": "/"})
    response.set_cookie(
        COOKIE_NAME,
        state.signer.make(identity, now),
        max_age=int(SESSION_SECONDS),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=state.settings.tls is not None,
    )
    return response
