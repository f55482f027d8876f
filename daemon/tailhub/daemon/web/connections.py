"""The web listener's connections, counted from accept to close: how many may be open, and how
long one may take to say what it wants.

Anyone who can reach the port can open connections without logging in. Unbounded, 20,000
half-open requests (a header line every few seconds, never the blank line) held 20,000 of the
daemon's descriptors: its jobs failed with "too many open files", its Unix socket stopped
answering, and accept() spun on EMFILE. So:

- at most `max_connections` are open at once, and `max_connections_per_peer` from one
  address; one past either is aborted the moment it is accepted (nothing read, nothing sent);
- a connection has `request_timeout` seconds from accept (the TLS handshake included) to
  present a whole request head, and again for each next request on a kept-alive connection
  (counted from its first byte), or it is aborted. A request that reached a handler is never
  cut by it: an event stream lives as long as its tab (and its session) does.

Counting starts at accept, so TLS is wrapped here (asyncio's own `SSLProtocol` around
aiohttp's), not by `create_server(ssl=)`: there a connection is seen only once its handshake
is done, and one that never finishes it would never be counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable, Iterator

from aiohttp.http_exceptions import HttpProcessingError

from tailhub.daemon.peer_groups import host_group

logger = logging.getLogger(__name__)

ProtocolFactory = Callable[[], asyncio.BaseProtocol]
AIOHTTP_SERVER_LOGGER = "aiohttp.server"
# The web view's connections take at most this share of the daemon's descriptor limit.
SHARE_OF_DESCRIPTORS = 4


def fitted_total(asked: int, descriptor_limit: int | None) -> int:
    """The cap on connections in all: as asked, within a quarter of the daemon's descriptors
    (the job admission keeps that many aside besides its own reserve: app.py)."""
    if descriptor_limit is None:
        return asked
    return max(1, min(asked, descriptor_limit // SHARE_OF_DESCRIPTORS))


class BadRequestFilter(logging.Filter):
    """aiohttp's record of a request it could not parse (a request line or header past its
    limit, bytes that are not HTTP) as one WARNING line without its traceback, the same for
    every such request from one address, so that the daemon log's repeat filter collapses a
    flood of them: the client has its 400 already, and a traceback in the log means a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError) or not record.args:
            return True
        record.msg = "web view: refused a request from %s that is not HTTP it takes (%s)"
        record.args = (record.args[0], type(error).__name__)  # type: ignore[index]
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_bad_requests() -> None:
    """Installs BadRequestFilter on aiohttp's server logger, once."""
    server_logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    if not any(isinstance(each, BadRequestFilter) for each in server_logger.filters):
        server_logger.addFilter(BadRequestFilter())


class Connections:
    """The open connections of one listener, and the factory that counts them."""

    def __init__(self, total: int, per_peer: int, request_timeout: float, idle: float) -> None:
        self.total = total
        self.per_peer = min(per_peer, total)
        self.request_timeout = request_timeout
        # Between requests: aiohttp's keep-alive timeout closes an idle connection first;
        # this bounds one whose next request head was already (partly) read with the last.
        self._between = idle + request_timeout
        self._by_peer: collections.Counter[str] = collections.Counter()
        # aiohttp's protocol (what a request names) -> its connection.
        self._of_handler: dict[object, _Counted] = {}
        self._open: set[_Counted] = set()
        self.refused = 0
        self.timed_out = 0

    @property
    def open(self) -> int:
        return len(self._open)

    def factory(self, inner: ProtocolFactory, context: ssl.SSLContext | None) -> ProtocolFactory:
        """A protocol factory for `loop.create_server` (given no `ssl=`): aiohttp's protocol
        from `inner`, under TLS with `context`, counted and timed."""

        def make() -> asyncio.BaseProtocol:
            app = inner()
            if context is None:
                return _Plain(self, app)
            return _Tls(self, app, _tls_around(app, context, self.request_timeout))

        return make

    @contextlib.contextmanager
    def in_handler(self, handler: object) -> Iterator[None]:
        """While a request is handled: its connection's deadline is off (a stream may last);
        once it is answered, the next request has its own."""
        connection = self._of_handler.get(handler)
        if connection is None:
            yield
            return
        connection.busy()
        try:
            yield
        finally:
            connection.between()

    def close(self) -> None:
        """Aborts every connection still open (a TLS handshake aiohttp never saw included)."""
        for connection in list(self._open):
            connection.abort()

    def _admit(self, connection: _Counted, peer: str) -> bool:
        if len(self._open) >= self.total or self._by_peer[peer] >= self.per_peer:
            self.refused += 1
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                logger.warning(
                    "web view: connection from %s refused: %d open (at most %d, %d from one "
                    "address: --http-max-connections, --http-max-connections-per-peer); "
                    "%d refused so far",
                    peer or "?",
                    len(self._open),
                    self.total,
                    self.per_peer,
                    self.refused,
                )
            return False
        self._open.add(connection)
        self._by_peer[peer] += 1
        self._of_handler[connection.app] = connection
        return True

    def _release(self, connection: _Counted, peer: str) -> None:
        self._open.discard(connection)
        self._of_handler.pop(connection.app, None)
        self._by_peer[peer] -= 1
        if self._by_peer[peer] <= 0:
            del self._by_peer[peer]


class _Counted:
    """What both kinds of connection share: the count, the deadline, the abort."""

    def __init__(self, owner: Connections, app: asyncio.BaseProtocol) -> None:
        self.owner = owner
        self.app = app
        self._transport: asyncio.BaseTransport | None = None
        self._peer = ""
        self._deadline: asyncio.TimerHandle | None = None
        # Waiting for the first byte of a next request (its deadline starts there).
        self._between = False
        # The protocol this one stands before: aiohttp's, or asyncio's TLS around it.
        self._inner: asyncio.Protocol | asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._made(transport):
            self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost():
            self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _made(self, transport: asyncio.BaseTransport) -> bool:
        """Counts the connection; False (and aborted) past a limit."""
        peer = transport.get_extra_info("peername")
        self._peer = host_group(str(peer[0])) if isinstance(peer, tuple) and peer else ""
        if not self.owner._admit(self, self._peer):
            _abort(transport)
            return False
        self._transport = transport
        self._arm(self.owner.request_timeout)
        return True

    def _lost(self) -> bool:
        """Uncounts it; False when it never was."""
        if self._transport is None:
            return False
        self._disarm()
        self.owner._release(self, self._peer)
        return True

    def _received(self) -> None:
        if self._between:
            self._between = False
            self._arm(self.owner.request_timeout)

    def busy(self) -> None:
        self._between = False
        self._disarm()

    def between(self) -> None:
        self._between = True
        self._arm(self.owner._between)

    def abort(self) -> None:
        if self._transport is not None:
            _abort(self._transport)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        if self._transport is not None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        self.owner.timed_out += 1
        logger.debug(
            "web view: connection from %s closed: no whole request in %.1fs "
            "(--http-request-timeout)",
            self._peer or "?",
            self.owner.request_timeout,
        )
        self.abort()


def _tls_around(
    app: asyncio.BaseProtocol, context: ssl.SSLContext, handshake_timeout: float
) -> asyncio.BufferedProtocol:
    """asyncio's server-side TLS around `app`, as `create_server(ssl=)` makes it (a
    BufferedProtocol since 3.11; typeshed's stub is older)."""
    made: asyncio.BufferedProtocol = SSLProtocol(  # type: ignore[assignment]
        asyncio.get_running_loop(),
        app,
        context,
        None,  # type: ignore[arg-type]
        server_side=True,
        ssl_handshake_timeout=handshake_timeout,  # type: ignore[arg-type]
    )
    return made


def _abort(transport: asyncio.BaseTransport) -> None:
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    else:
        transport.close()


class _Plain(_Counted, asyncio.Protocol):
    """A plain connection: aiohttp's protocol, counted."""

    def __init__(self, owner: Connections, app: asyncio.BaseProtocol) -> None:
        super().__init__(owner, app)
        assert isinstance(app, asyncio.Protocol)
        self._inner = self._plain = app

    def data_received(self, data: bytes) -> None:
        self._received()
        self._plain.data_received(data)


class _Tls(_Counted, asyncio.BufferedProtocol):
    """A TLS connection: asyncio's TLS protocol around aiohttp's, counted from accept."""

    def __init__(
        self, owner: Connections, app: asyncio.BaseProtocol, tls: asyncio.BufferedProtocol
    ) -> None:
        super().__init__(owner, app)
        self._inner = self._tls = tls

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._tls.get_buffer(sizehint))

    def buffer_updated(self, nbytes: int) -> None:
        self._received()
        self._tls.buffer_updated(nbytes)
