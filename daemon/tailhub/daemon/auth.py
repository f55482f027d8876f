"""Who may call what over the network listeners: one interceptor, the roles table below.

It sits only on the TCP server. The Unix socket's server has no interceptor at all: its owner
keeps every right, and no call can pass for one that came in on the socket (grpc.aio
interceptors cannot tell which port a call came in on, so they are never asked to).

| role  | may call |
| read  | Subscribe, GetJob, ListJobs, GetDaemonStatus, CreateWebLogin, health, reflection |
| write | read + Publish, FinishJob, CancelJobs of push and attached jobs, AttachJob (push) |
| admin | everything, including LaunchJob, RemoveJobs, AttachJob (file, command, skypilot) |

A missing or unknown token is UNAUTHENTICATED, a role too low PERMISSION_DENIED; any method not
in the table (one added later) needs admin. The same interceptor counts Subscribe streams per
token and in all, refusing one past either cap with RESOURCE_EXHAUSTED. Each refusal is an
error of errors.py, told as the service tells every error (`service.abort`).
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio

from tailhub.daemon import callers
from tailhub.daemon.errors import (
    DaemonError,
    RoleTooLow,
    TokenMissing,
    TokenNotAccepted,
    TooManyFailedAuthentications,
    TooManyStreams,
    UnknownMethod,
)
from tailhub.daemon.failed_auth import FailedAuthLimit
from tailhub.daemon.peer_groups import peer_address
from tailhub.daemon.service import abort
from tailhub.daemon.tokens import Role, TokenIndex

_SERVICE = "/tailhub.v1.TailhubService/"
SUBSCRIBE = _SERVICE + "Subscribe"
_ATTACH = _SERVICE + "AttachJob"
_CANCEL = _SERVICE + "CancelJobs"

# The lowest role that may call each method; a method not here needs admin.
ROLES: dict[str, Role] = {
    SUBSCRIBE: Role.READ,
    _SERVICE + "GetJob": Role.READ,
    _SERVICE + "ListJobs": Role.READ,
    _SERVICE + "GetDaemonStatus": Role.READ,
    # A login to the web view, which only reads, whatever the token's role.
    _SERVICE + "CreateWebLogin": Role.READ,
    "/grpc.health.v1.Health/Check": Role.READ,
    "/grpc.health.v1.Health/Watch": Role.READ,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Role.READ,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Role.READ,
    _SERVICE + "Publish": Role.WRITE,
    _SERVICE + "FinishJob": Role.WRITE,
    # Checked again on the request: a write token cancels push and attached jobs only, and
    # attaches push jobs only (a file or command source reads files or runs programs here).
    _CANCEL: Role.WRITE,
    _ATTACH: Role.WRITE,
    _SERVICE + "LaunchJob": Role.ADMIN,
    _SERVICE + "RemoveJobs": Role.ADMIN,
}

# Given the job ids a CancelJobs names and its `all`, the id of a launched job (local or
# SkyPilot) it would cancel, else None.
LaunchedTarget = Callable[[Sequence[int], bool], "int | None"]
Behavior = Callable[..., Any]


class StreamCaps:
    """Concurrent Subscribe streams over the network, per token and in all."""

    def __init__(self, total: int, per_token: int) -> None:
        self.total = total
        self.per_token = per_token
        self.open = 0
        self.by_token: collections.Counter[str] = collections.Counter()

    def refusal(self, name: str) -> str | None:
        """Why one more stream for token `name` is refused; None when it is not."""
        if self.open >= self.total:
            return (
                f"too many log streams: the daemon serves at most {self.total} at once over "
                "the network (tailhubd --max-streams)"
            )
        if self.by_token[name] >= self.per_token:
            return (
                f"too many log streams for this token: at most {self.per_token} at once "
                "(tailhubd --max-streams-per-token)"
            )
        return None


if TYPE_CHECKING:  # generic in the stubs only
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class AuthInterceptor(_ServerInterceptor):
    """Checks the caller's bearer token and role before a call reaches the servicer."""

    def __init__(
        self,
        tokens: TokenIndex,
        launched: LaunchedTarget,
        caps: StreamCaps,
        failures: FailedAuthLimit,
    ) -> None:
        self._tokens = tokens
        self._launched = launched
        self._caps = caps
        self._failures = failures

    async def intercept_service(  # type: ignore[override]  # None: an unknown method
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        handler = await continuation(handler_call_details)

        def decide(context: grpc.aio.ServicerContext[Any, Any]) -> Behavior | DaemonError:
            # Here, not before the call: only its context knows the peer.
            chosen = self._chosen(method, metadata, handler, context.peer())
            return chosen if isinstance(chosen, DaemonError) else _behavior(chosen)

        return _deciding(handler, decide)

    def _chosen(
        self,
        method: str,
        metadata: Sequence[tuple[str, str | bytes]] | None,
        handler: grpc.RpcMethodHandler[Any, Any] | None,
        peer: str,
    ) -> grpc.RpcMethodHandler[Any, Any] | DaemonError:
        """The handler that serves this call, or why it is refused."""
        caller = self._admitted(method, metadata, peer_address(peer))
        if isinstance(caller, DaemonError):
            return caller
        if handler is None:
            return UnknownMethod(f"no method {_short(method)}")
        name, role = caller
        # For the call's own task (its quota: quotas.py); never set on the Unix socket.
        callers.set_token(name)
        if role is Role.WRITE and method == _ATTACH:
            return _checking(handler, _attach_check)
        if role is Role.WRITE and method == _CANCEL:
            return _checking(handler, self._cancel_check)
        if handler.unary_stream is not None or handler.stream_stream is not None:
            # Subscribe, and health Watch and reflection: every stream a caller keeps open.
            return self._counted(handler, name)
        return handler

    def _admitted(
        self, method: str, metadata: Sequence[tuple[str, str | bytes]] | None, address: str
    ) -> tuple[str, Role] | DaemonError:
        """The caller's token name and role; a peer past its failures is refused first."""
        wait = self._failures.wait_before(address)
        if wait is not None:
            # Before the token is looked at: a guesser's calls cost as little as they can.
            return TooManyFailedAuthentications(
                f"too many failed authentications from {address}: try again in "
                f"{max(1, math.ceil(wait))} s"
            )
        caller = self._caller(method, metadata)
        if isinstance(caller, (TokenMissing, TokenNotAccepted)):
            self._failures.failed(address, str(caller))
        return caller

    def _caller(
        self, method: str, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> tuple[str, Role] | DaemonError:
        """The token's name and role, or why the call is refused before it starts."""
        token = _bearer(metadata)
        if token is None:
            return TokenMissing(
                "no token: send 'authorization: Bearer TOKEN' (tailhub --token-file)"
            )
        found = self._tokens.role_of(token)
        if found is None:
            return TokenNotAccepted("token not accepted (unknown or revoked)")
        required = ROLES.get(method, Role.ADMIN)
        if found[1] < required:
            return RoleTooLow(
                f"a {found[1].label} token may not call {_short(method)} "
                f"(it needs {required.label})"
            )
        return found

    def _cancel_check(self, request: Any) -> str | None:
        job_id = self._launched(list(request.job_ids), bool(request.all))
        if job_id is None:
            return None
        return (
            f"a write token cancels push and attached jobs only; job {job_id} was launched "
            "(cancelling it needs admin)"
        )

    def _counted(
        self, handler: grpc.RpcMethodHandler[Any, Any], name: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler of a streaming method, holding a place under the caps while it runs."""
        caps = self._caps
        streaming = handler.unary_stream is not None
        behavior = cast("Behavior", handler.unary_stream if streaming else handler.stream_stream)

        @contextlib.contextmanager
        def place() -> Iterator[None]:
            caps.open += 1
            caps.by_token[name] += 1
            try:
                yield
            finally:
                caps.open -= 1
                caps.by_token[name] -= 1
                if not caps.by_token[name]:
                    del caps.by_token[name]

        async def refused(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            refusal = caps.refusal(name)
            if refusal is not None:
                await abort(context, TooManyStreams(refusal))

        if inspect.isasyncgenfunction(behavior):

            async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await refused(context)
                with place():
                    async for item in behavior(request, context):
                        yield item

        else:  # writes with context.write (grpc's health Watch)

            async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # type: ignore[misc]
                await refused(context)
                with place():
                    return await behavior(request, context)

        make = (
            grpc.unary_stream_rpc_method_handler
            if streaming
            else grpc.stream_stream_rpc_method_handler
        )
        return make(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _attach_check(request: Any) -> str | None:
    source = request.WhichOneof("source")
    if source == "push":
        return None
    return (
        f"a write token attaches push jobs only; a {source or 'missing'} source needs admin "
        "(it reads files or runs programs on the daemon's host)"
    )


def _bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() != "authorization" or not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1] or method


def _checking(
    handler: grpc.RpcMethodHandler[Any, Any], check: Callable[[Any], str | None]
) -> grpc.RpcMethodHandler[Any, Any]:
    """A unary handler that runs `check` on the request first; its answer refuses the call."""
    behavior = cast("Behavior", handler.unary_unary)

    async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        refusal = check(request)
        if refusal is not None:
            await abort(context, RoleTooLow(refusal))
        return await behavior(request, context)

    return grpc.unary_unary_rpc_method_handler(
        checked,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _behavior(handler: grpc.RpcMethodHandler[Any, Any]) -> Behavior:
    return cast(
        "Behavior",
        handler.unary_unary
        or handler.unary_stream
        or handler.stream_unary
        or handler.stream_stream,
    )


def _deciding(
    handler: grpc.RpcMethodHandler[Any, Any] | None,
    decide: Callable[[grpc.aio.ServicerContext[Any, Any]], Behavior | DaemonError],
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as `handler` (unary for an unknown method) whose calls
    run what `decide` picks once it has seen the call's context, or end with its refusal."""

    async def chosen(context: grpc.aio.ServicerContext[Any, Any]) -> Behavior:
        picked = decide(context)
        if isinstance(picked, DaemonError):
            await abort(context, picked)
        return picked

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        behavior = await chosen(context)
        return await behavior(request, context)

    async def streaming(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        behavior = await chosen(context)
        if inspect.isasyncgenfunction(behavior):
            async for item in behavior(request, context):
                yield item
        else:  # writes with context.write (grpc's health Watch)
            await behavior(request, context)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    if handler is None:
        return grpc.unary_unary_rpc_method_handler(unary)
    kind = (handler.request_streaming, handler.response_streaming)
    return kinds[kind](
        streaming if handler.response_streaming else unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
