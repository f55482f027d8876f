"""The daemons a client may call: this machine's socket, or the `--server A,B,...` list of a
cluster, in order of preference. One channel each, opened when first needed, and more for
streams to a remote daemon (`streaming`); the server in use now, and the order a call tries the
others in when it cannot reach that one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from tailhub.client._errors import DaemonUnreachable, TailhubError, from_rpc_error, is_transient
from tailhub.client._remote import CONNECT_TIMEOUT, Target, diagnose, wait_connected, with_token
from tailhub.daemon.paths import StatePaths
from tailhub.v1 import tailhub_pb2_grpc as rpc

T = TypeVar("T")
# A method of the stub, picked from whichever daemon's stub the call goes to.
StubMethod = Callable[[rpc.TailhubServiceStub], Callable[..., T]]

# Log streams one connection to a remote daemon carries before the next stream gets a
# connection of its own: a daemon's --listen connection carries at most 8 streams (the rest
# would wait in the client, unseen, until one ends: daemon/listeners.py), and the unary calls
# beside them on the first connection need room too. The Unix socket has no such cap.
STREAMS_PER_CHANNEL = 6


@dataclass
class _Lane:
    """One connection's streams to a remote daemon."""

    channel: grpc.Channel
    stub: rpc.TailhubServiceStub
    streams: int = 0


@dataclass
class _Server:
    address: str
    target: Target | None  # None: this machine's socket
    channel: grpc.Channel | None = None
    stub: rpc.TailhubServiceStub | None = None
    # The channel's last state, kept once tracked (after its first connection attempt).
    state_tracked: bool = False
    state: grpc.ChannelConnectivity | None = None
    # Held through the first connection attempt: several follows may reach it at once.
    first_reach: threading.Lock = field(default_factory=threading.Lock)
    # Streams to a remote daemon: the first lane is `channel`, later ones connections of their own.
    lanes: list[_Lane] = field(default_factory=list)


class Servers:
    """The daemons of one client. Thread-safe: several follows may share it."""

    def __init__(
        self, servers: Sequence[tuple[str, Target | None]], options: list[tuple[str, Any]]
    ) -> None:
        if not servers:
            raise ValueError("a client needs at least one server")
        self._servers = [_Server(address, target) for address, target in servers]
        self._options = options
        self._lock = threading.Lock()
        self._current = 0

    @classmethod
    def local(cls, paths: StatePaths, options: list[tuple[str, Any]]) -> Servers:
        return cls([(paths.address, None)], options)

    @classmethod
    def remote(cls, targets: Sequence[Target], options: list[tuple[str, Any]]) -> Servers:
        return cls([(target.address, target) for target in targets], options)

    def __len__(self) -> int:
        return len(self._servers)

    @property
    def current(self) -> int:
        """The server calls go to first: the last one that answered."""
        return self._current

    @property
    def addresses(self) -> str:
        return ", ".join(server.address for server in self._servers)

    def address(self, index: int) -> str:
        return self._servers[index].address

    def stub(self, index: int) -> rpc.TailhubServiceStub:
        self._open(index)
        stub = self._servers[index].stub
        assert stub is not None
        return stub

    @contextmanager
    def streaming(self, index: int) -> Iterator[rpc.TailhubServiceStub]:
        """The stub a stream to server `index` goes through, while it lasts: to a remote daemon,
        at most STREAMS_PER_CHANNEL streams share a connection."""
        self._open(index)
        server = self._servers[index]
        if server.target is None:
            assert server.stub is not None
            yield server.stub
            return
        lane = self._lane(server)
        try:
            yield lane.stub
        finally:
            with self._lock:
                lane.streams -= 1

    def _lane(self, server: _Server) -> _Lane:
        assert server.target is not None
        assert server.channel is not None
        assert server.stub is not None
        with self._lock:
            if not server.lanes:
                server.lanes.append(_Lane(server.channel, server.stub))
            lane = next((lane for lane in server.lanes if lane.streams < STREAMS_PER_CHANNEL), None)
            if lane is None:
                # A subchannel pool of its own: channels with the same options would otherwise
                # share one connection.
                options = [*self._options, ("grpc.use_local_subchannel_pool", 1)]
                channel = server.target.channel(options)
                lane = _Lane(channel, rpc.TailhubServiceStub(with_token(channel, server.target)))
                server.lanes.append(lane)
            lane.streams += 1
            return lane

    def channel(self, index: int) -> grpc.Channel:
        self._open(index)
        channel = self._servers[index].channel
        assert channel is not None
        return channel

    def channels(self, index: int) -> list[grpc.Channel]:
        """Every channel open to server `index`: its own and its streams' (`streaming`)."""
        channel = self.channel(index)
        with self._lock:
            return [channel, *(lane.channel for lane in self._servers[index].lanes[1:])]

    def tries(self) -> list[int]:
        """Every server once: the current one, then the next ones in the list's order."""
        count = len(self._servers)
        return [(self._current + step) % count for step in range(count)]

    def settle(self, index: int) -> None:
        """`index` answered: later calls go there first."""
        self._current = index

    def advance(self, failed: int) -> int:
        """The server after `failed` (round robin); it becomes the current one unless another
        caller has moved on already."""
        following = (failed + 1) % len(self._servers)
        with self._lock:
            if self._current == failed:
                self._current = following
        return following

    def reach(self, index: int, timeout: float = CONNECT_TIMEOUT) -> TailhubError | None:
        """None once the server's channel is connected; else why it cannot be (nothing has
        been sent to it then, so even a call that changes something may go elsewhere)."""
        server, channel = self._servers[index], self.channel(index)
        if server.target is None:
            return None  # the socket's daemon is waited for by the call itself
        with server.first_reach:
            if not server.state_tracked:
                return self._reach_first(server, channel, timeout)
        if server.state is grpc.ChannelConnectivity.READY:
            return None
        # Disconnected since: plain sockets say at once whether it could connect now (a
        # call then connects the channel itself and waits for it).
        return diagnose(server.target)

    def _reach_first(
        self, server: _Server, channel: grpc.Channel, timeout: float
    ) -> TailhubError | None:
        assert server.target is not None
        try:
            wait_connected(channel, server.target, timeout)
        except TailhubError as error:
            return error
        finally:
            if len(self._servers) > 1:  # one daemon: calls wait for it themselves
                self._track_state(server, channel)
        server.state = grpc.ChannelConnectivity.READY
        return None

    def _track_state(self, server: _Server, channel: grpc.Channel) -> None:
        """Keeps `server.state` up to date from now on.

        Asked once per channel, and without trying to connect: a channel's connectivity
        poller asked to connect while it still runs calls into the channel once more, and
        raises in its own thread when the channel was closed meanwhile."""

        def record(state: grpc.ChannelConnectivity) -> None:
            server.state = state

        server.state_tracked = True
        channel.subscribe(record, try_to_connect=False)

    def call(self, method: StubMethod[T], request: Any, timeout: float, *, read: bool) -> T:
        """Calls `method` on the current server, else on the next ones in turn: any call when
        it cannot connect to one, or when a daemon answers that it did nothing and another
        may take it (`elsewhere`: its cluster's Redis is unreachable from it), a `read` (it
        changes nothing) also when a daemon answers it as unavailable; else the error it
        got. When none takes it, `none_answered`."""
        errors: list[TailhubError] = []
        for index in self.tries():
            problem = self.reach(index)
            if problem is not None:
                errors.append(problem)
                continue
            try:
                # A read fails at once on a channel that cannot connect (the next may answer);
                # a change is only sent once connected, and never again elsewhere.
                answer = method(self.stub(index))(request, timeout=timeout, wait_for_ready=not read)
            except grpc.RpcError as error:
                failed = from_rpc_error(error, self.address(index))
                if not (failed.elsewhere or (read and is_transient(error))):
                    raise failed from None
                errors.append(failed)
                continue
            self.settle(index)
            return answer
        raise none_answered(errors)

    def connect_first(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Makes the first server that can be reached (within `timeout` seconds each), in the
        list's order, the current one; raises `none_answered` when none can."""
        errors: list[TailhubError] = []
        for index in self.tries():
            problem = self.reach(index, timeout)
            if problem is None:
                self.settle(index)
                return
            errors.append(problem)
        raise none_answered(errors)

    def close(self) -> None:
        with self._lock:
            for server in self._servers:
                if server.channel is not None:
                    server.channel.close()
                for lane in server.lanes[1:]:
                    lane.channel.close()

    def _open(self, index: int) -> None:
        with self._lock:
            server = self._servers[index]
            if server.channel is not None:
                return
            if server.target is None:
                server.channel = grpc.insecure_channel(server.address, options=self._options)
                calls = server.channel
            else:
                server.channel = server.target.channel(self._options)
                calls = with_token(server.channel, server.target)
            server.stub = rpc.TailhubServiceStub(calls)


def none_answered(errors: Sequence[TailhubError]) -> TailhubError:
    """One error for a call no server of the list could take, naming each server tried (each
    error names its own); with one server, its error as it is."""
    if len(errors) == 1:
        return errors[0]
    kinds = {type(error) for error in errors}
    # One cause everywhere keeps its exit code; mixed causes: no daemon answered (104).
    kind = kinds.pop() if len(kinds) == 1 else DaemonUnreachable
    return kind(f"none of {len(errors)} servers answered: " + "; ".join(map(str, errors)))
