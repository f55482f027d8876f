"""The web view's server: an aiohttp application run by `AppRunner`/`TCPSite` in the daemon's
own event loop (no thread, no second loop), its routes, and what every response gets.

A request whose `Host` is not the listener's own name and port is refused first, 421
(hosts.py: DNS rebinding). Every response carries a strict Content-Security-Policy (no inline
script or style), nosniff and no-referrer. Only GET is served (anything else: 405). Every page
and `/api/` path needs a session (the cookie `/login` sets); without one, pages answer 401 with
a line saying to run `tailhub web`, and `/api/` paths 401 JSON. The access log (debug level)
never holds a query string: `/login`'s carries the one-time code.

Connections are capped in all and per address, and must present a whole request within
`--http-request-timeout` of accept (connections.py); the cap is kept aside in the daemon's
descriptor budget, so the web view cannot run the daemon out of descriptors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from tailhub.daemon.budget import SendBudget
from tailhub.daemon.config import DaemonConfig, format_host_port
from tailhub.daemon.errors import ListenerError, WebViewOff
from tailhub.daemon.fanout import FilterPacer
from tailhub.daemon.listeners import EXIT_ADDRESS
from tailhub.daemon.manager import JobManager
from tailhub.daemon.tokens import TokenIndex
from tailhub.daemon.web import downloads, job_list, log_events, pages
from tailhub.daemon.web.connections import Connections, fitted_total, quiet_bad_requests
from tailhub.daemon.web.hosts import HostCheck
from tailhub.daemon.web.job_feed import FEED, JobFeed, job_events
from tailhub.daemon.web.login import LoginCodes
from tailhub.daemon.web.sessions import (
    COOKIE_NAME,
    CookieSigner,
    identity_of_caller,
    load_key,
    still_valid,
)
from tailhub.daemon.web.settings import WebSettings, shown_address
from tailhub.daemon.web.sse import StreamSlots
from tailhub.daemon.web.state import (
    EVENT_CACHE_BYTES,
    IDENTITY,
    STATE,
    WebState,
    json_error,
)
from tailhub.daemon.wire import EncodedChunkCache

logger = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Paths served without a session: the login itself, and the page's files (no job's data).
_OPEN_PATHS = ("/login",)
_OPEN_PREFIXES = ("/static/",)
# A browser's request head is far smaller; a larger one is refused before any handler.
MAX_FIELD_BYTES = 8 * 1024
# An idle kept-alive connection is closed after this (a browser opens another at once).
KEEPALIVE_SECONDS = 15.0


class _AccessLog(AbstractAccessLogger):
    """One debug line per request: method, path without its query, status, time."""

    def log(self, request: Any, response: Any, time: float) -> None:
        self.logger.debug(
            "web: %s %s %s %.3fs", request.method, request.path, response.status, time
        )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


@web.middleware
async def _in_handler(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request that reached here is whole: its connection's deadline is off until it is
    answered (an event stream lasts as long as its tab)."""
    with request.app[STATE].connections.in_handler(request.protocol):
        return await handler(request)


@web.middleware
async def _own_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    """421 for a `Host` that is not the listener's (a rebound name: hosts.py)."""
    hosts = request.app[STATE].hosts
    if hosts is None or not hosts.allows(request.headers.get("Host")):
        if request.path.startswith("/api/"):
            return json_error(
                421, "wrong host: open the web view at the address tailhub web prints"
            )
        return pages.wrong_host()
    return await handler(request)


@web.middleware
async def _get_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method != "GET":
        response = json_error(405, "the web view only reads: GET")
        response.headers["Allow"] = "GET"
        return response
    return await handler(request)


@web.middleware
async def _session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who the request reads as, from its cookie; 401 without a valid session."""
    path = request.path
    if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
        return await handler(request)
    state = request.app[STATE]
    identity = state.signer.read(request.cookies.get(COOKIE_NAME), time.time())
    if identity is None or not still_valid(identity, state.tokens):
        if path.startswith("/api/"):
            return json_error(401, "no session: run `tailhub web` to get a login link")
        return pages.no_session()
    request[IDENTITY] = identity
    return await handler(request)


def make_app(state: WebState, feed: JobFeed) -> web.Application:
    app = web.Application(
        middlewares=[_in_handler, _own_host, _get_only, _session], client_max_size=64 * 1024
    )
    app[STATE] = state
    app[FEED] = feed
    app.on_response_prepare.append(_security_headers)

    def get(path: str, handler: Handler) -> None:
        app.router.add_get(path, handler, allow_head=False)

    get("/", pages.app_page)
    get("/jobs", pages.app_page)
    get("/jobs/{id}", pages.app_page)
    get("/static/{file}", pages.asset)
    get("/login", pages.login)
    get("/api/jobs", job_list.jobs)
    get("/api/jobs/{id}", job_list.job)
    get("/api/jobs/{id}/raw", downloads.raw)
    get("/api/events/jobs", job_events)
    get("/api/events/jobs/{id}/log", log_events.job_log)
    get("/api/events/logs", log_events.logs)
    return app


class WebView:
    """`tailhubd --http-listen`: started once the jobs are, stopped with the daemon."""

    def __init__(
        self,
        settings: WebSettings,
        manager: JobManager,
        config: DaemonConfig,
        budget: SendBudget,
        filter_pacer: FilterPacer,
    ) -> None:
        self.settings = settings
        self._tokens = TokenIndex(config.paths.root)
        descriptors = manager.descriptors
        connections = Connections(
            fitted_total(settings.max_connections, descriptors.limit),
            settings.max_connections_per_peer,
            settings.request_timeout,
            KEEPALIVE_SECONDS,
        )
        # Kept aside from what jobs may take (quotas.py: those already open count as in
        # use, so this errs on the safe side): with the web view full, the daemon still
        # has its own reserve.
        if descriptors.limit is not None:
            descriptors.reserve += connections.total
        self._state = WebState(
            manager=manager,
            config=config,
            settings=settings,
            budget=budget,
            filter_pacer=filter_pacer,
            tokens=self._tokens,
            signer=CookieSigner(load_key(config.paths)),
            codes=LoginCodes(),
            slots=StreamSlots(settings.max_streams, settings.max_streams_per_session),
            events=EncodedChunkCache(EVENT_CACHE_BYTES),
            connections=connections,
        )
        manager.on_removed(self._state.events.forget)
        self._feed = JobFeed(manager)
        self._runner: web.AppRunner | None = None
        self._site: _CountedSite | None = None
        self.url = ""

    @property
    def address(self) -> str:
        """HOST:PORT as bound (the real port when 0 was asked for); "" before start()."""
        if self._state.hosts is None:
            return ""
        return format_host_port(self.settings.address.host, self._state.hosts.port)

    async def start(self) -> None:
        """Binds and serves; ListenerError (exit 5) when the address cannot be bound."""
        quiet_bad_requests()
        runner = web.AppRunner(
            make_app(self._state, self._feed),
            handle_signals=False,
            access_log_class=_AccessLog,
            access_log=logger,
            # A tab that closes ends its handler at once, and with it the job's cursor.
            handler_cancellation=True,
            max_field_size=MAX_FIELD_BYTES,
            keepalive_timeout=KEEPALIVE_SECONDS,
            shutdown_timeout=self._state.config.stop_grace,
        )
        await runner.setup()
        address = self.settings.address
        site = _CountedSite(
            runner, address.host, address.port, self._state.connections, self.settings
        )
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise ListenerError(
                f"cannot serve the web view on {address}: {error.strerror or error} "
                "(--http-listen)",
                EXIT_ADDRESS,
            ) from None
        self._runner, self._site = runner, site
        port = int(runner.addresses[0][1]) if runner.addresses else address.port
        self.url = shown_address(self.settings, port)
        self._state.hosts = HostCheck(self.settings, port)
        logger.info(
            "web view on %s (%s)",
            self.url,
            "TLS" if self.settings.tls is not None else "plain http, loopback only",
        )

    def login(self, token_name: str | None) -> tuple[str, float]:
        """A one-time login URL for the caller (callers.token(): None for the owner) and
        when its code expires."""
        identity = identity_of_caller(token_name, self._tokens)
        if identity is None:  # revoked between its call's check and now
            raise WebViewOff("the token was revoked")
        code, expires = self._state.codes.create(identity, time.time())
        return f"{self.url}/login?code={code}", expires

    async def close(self) -> None:
        await self._feed.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None
        self._state.connections.close()


class _CountedSite(web.TCPSite):
    """aiohttp's TCP site, its connections counted and timed from accept (connections.py),
    TLS included."""

    __slots__ = ("_connections",)

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        connections: Connections,
        settings: WebSettings,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=settings.ssl_context)
        self._connections = connections

    async def start(self) -> None:
        await web.BaseSite.start(self)  # (not TCPSite's: it would bind with its own factory)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._connections.factory(server, self._ssl_context),
            self._host,
            self._port,
            backlog=self._backlog,
        )
