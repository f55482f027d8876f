"""A job's log followed across daemon restarts and failovers (`Client.follow`).

One Subscribe stream at a time; when it breaks, the follow waits for a daemon (the next of a
list, round robin) and resumes at the next byte, so that no byte is lost or repeated:
- `_Cursor`: where the follower stands, and the request that resumes there;
- `_Reconnects`: one follow's outage, its pauses, and when it gives up;
- `Outages`: what every follow of one client tells, once each, when its daemon is lost and back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from tailhub.client._errors import DaemonUnreachable, ProtocolError, from_rpc_error, is_transient
from tailhub.client._remote import CONNECT_TIMEOUT
from tailhub.client._servers import Servers
from tailhub.client._types import (
    LogChunk,
    LogEnd,
    LogEvent,
    LogHeartbeat,
    LogItem,
    LogTimeMark,
    state_of,
)
from tailhub.daemon.home_kind import recorded_kind
from tailhub.daemon.paths import StatePaths
from tailhub.v1 import tailhub_pb2 as pb

DEFAULT_RECONNECT_TIMEOUT = 60.0
# Pauses between rounds of retries: from the first, doubled each round, up to the last.
MIN_RETRY_PAUSE = 0.05
MAX_RETRY_PAUSE = 1.0


@dataclass(frozen=True)
class Resumed:
    """Where a follow begun elsewhere (the CLI's lean path, _lean.py) stands: the next byte
    (None: none yet, from the last lines), the events shown at the last event's offset, and
    whether its stream broke (then the daemon is waited for first, as after a break here)."""

    next_offset: int | None
    events_offset: int | None = None
    events_here: tuple[str, ...] = ()
    broken: bool = False


def follow_log(
    servers: Servers,
    outages: Outages,
    closed: Callable[[], bool],
    job_id: int,
    *,
    offset: int,
    tail_lines: int | None,
    follow: bool,
    reconnect_timeout: float,
    since_time: float | None,
    timestamps: bool,
    grep: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    resumed: Resumed | None = None,
) -> Iterator[LogItem]:
    """The items of `Client.follow` (see there); `closed` says the client was closed.
    `resumed`: going on from where a follow begun elsewhere stands."""
    if tail_lines is not None and since_time is not None:
        raise ValueError("give tail_lines or since_time, not both: each says where to start")
    starts_later = tail_lines is not None or since_time is not None
    cursor = _Cursor(job_id, None if starts_later else offset, since_time, timestamps)
    cursor.filter(grep, exclude)
    reconnects = _Reconnects(servers, outages, reconnect_timeout)
    index = servers.current
    if resumed is not None:
        cursor.resume(resumed)
        if resumed.broken:
            index = reconnects.next_daemon(index, job_id, cursor.next_offset)
    while True:
        request = cursor.request(follow, tail_lines)
        ended = yield from _stream(servers, index, request, cursor, reconnects)
        if ended or closed():
            return  # the log's end; or closed by its owner: nothing was lost
        # The stream broke (daemon stopping or gone): wait for a daemon and resume.
        index = reconnects.next_daemon(index, job_id, cursor.next_offset)


def _stream(
    servers: Servers,
    index: int,
    request: pb.SubscribeRequest,
    cursor: _Cursor,
    reconnects: _Reconnects,
) -> Generator[LogItem, None, bool]:
    """One Subscribe stream's new items; True once the log's end came, False if it broke."""
    with servers.streaming(index) as stub:
        call = stub.Subscribe(request)
        try:
            for message in call:
                reconnects.served(index, cursor.next_offset)
                item = cursor.accept(_log_item(message))
                if isinstance(item, LogEnd):
                    # Its status first, then the end: a caller may stop at the end, and a
                    # stream cancelled after its last message, before its status, costs the
                    # daemon ~100 B of native memory for good (grpc.aio 1.85; 9 follows a
                    # launch under churn were ~0.5 KB of RSS each launch, issue 16, item 20).
                    _read_status(call)
                    yield item
                    return True
                if item is not None:
                    yield item
        except grpc.RpcError as error:
            if not is_transient(error):
                raise from_rpc_error(error, servers.address(index)) from None
        finally:
            _end(call)
            del call
    return False


class _Reconnects:
    """One follow's outage: since when no daemon has served it, and how long it waits."""

    def __init__(self, servers: Servers, outages: Outages, timeout: float) -> None:
        self._servers = servers
        self._outages = outages
        self._timeout = timeout
        self._down_since: float | None = None
        self._pause = MIN_RETRY_PAUSE
        self._failures = 0  # since the last message: a pause after each round of the list

    def served(self, index: int, offset: int | None) -> None:
        """A message came from daemon `index`: the outage, if any, is over."""
        if self._down_since is not None:
            self._servers.settle(index)
            self._outages.back(self._servers.address(index), offset)
        self._down_since, self._pause, self._failures = None, MIN_RETRY_PAUSE, 0

    def next_daemon(self, index: int, job_id: int, offset: int | None) -> int:
        """After daemon `index` broke the stream: the daemon to resume on, once it may answer;
        DaemonUnreachable when none has answered for the timeout."""
        now = time.monotonic()
        if self._down_since is None:
            self._outages.lost(self._timeout)
            self._down_since = now
        deadline = self._down_since + self._timeout
        left = deadline - now
        if left <= 0:
            raise DaemonUnreachable(
                f"{self._outages.lost_what()} and none came back within "
                f"{self._timeout:.0f} s; job {job_id} may still be running (read up to byte "
                f"{offset or 0})"
            )
        self._failures += 1
        if self._failures % len(self._servers) == 0:
            # A stopping daemon refuses new streams until it is gone: do not spin on it.
            time.sleep(min(self._pause, left))
            self._pause = min(self._pause * 2, MAX_RETRY_PAUSE)
        index = self._servers.advance(index)
        _wait_for_daemon(self._servers, index, deadline - time.monotonic())
        return index


def _wait_for_daemon(servers: Servers, index: int, timeout: float) -> None:
    if len(servers) > 1:
        # Not long on one of a list: the next may answer (the stream says which did).
        servers.reach(index, min(max(timeout, 0.05), CONNECT_TIMEOUT))
        return
    # Each of the daemon's channels, asked to connect now: a stream's own channel left to its
    # backoff would refuse the follow's next try at once, for up to its reconnect backoff.
    deadline = time.monotonic() + timeout
    for channel in servers.channels(index):
        ready = grpc.channel_ready_future(channel)
        try:
            ready.result(timeout=max(deadline - time.monotonic(), 0.05))
        except grpc.FutureTimeoutError:
            pass
        finally:
            # Unsubscribed from the channel now, not whenever the collector gets to it.
            ready.cancel()


class Outages:
    """What the follows of one client tell `on_wait`: one line as soon as one loses its
    daemon, one when one is served again (not one per retry, nor one per follow)."""

    def __init__(
        self,
        servers: Servers,
        paths: StatePaths | None,
        on_wait: Callable[[str], None] | None,
    ) -> None:
        self._servers = servers
        self._paths = paths
        self._on_wait = on_wait
        # A follow has told that its daemon was lost, and none has told it is back yet.
        self._outage = False
        self._lock = threading.Lock()

    def lost_what(self) -> str:
        """`lost the daemon on ADDRESS`, or the cluster node's name, or the list's."""
        servers = self._servers
        if len(servers) > 1:
            return f"lost the daemons on {servers.addresses}"
        kind = recorded_kind(self._paths) if self._paths is not None else None
        if kind is not None and kind.is_node:
            return f"lost {kind.describe()} on {servers.address(0)}"
        return f"lost the daemon on {servers.address(0)}"

    def lost(self, timeout: float) -> None:
        """What was lost, and how long it is waited for."""
        if self._on_wait is None:
            return
        with self._lock:
            if self._outage:
                return
            self._outage = True
        what = self.lost_what()
        if what.startswith("lost node"):  # nothing starts another daemon on a node's home
            how = f"waiting up to {timeout:.0f} s for it to come back (its service manager "
            self._on_wait(f"{what}; {how}restarts it; the job goes on)")
        else:
            self._on_wait(f"{what}; reconnecting for up to {timeout:.0f} s (the job goes on)")

    def back(self, address: str, offset: int | None) -> None:
        """Served again after `lost`: where, and from which byte."""
        if self._on_wait is None:
            return
        with self._lock:
            if not self._outage:
                return
            self._outage = False
        where = f"; resuming at byte {offset}" if offset is not None else ""
        self._on_wait(f"reconnected to {address}{where}")


def _read_status(call: Any) -> None:
    """Reads a stream to its status (nothing follows a log's end but the status)."""
    with contextlib.suppress(grpc.RpcError):  # the end came: how the stream closed is moot
        for _ in call:
            pass


def _end(call: Any) -> None:
    """Ends a call now, in this thread, and frees it as soon as the caller drops it.

    Cancelled explicitly (a no-op once it has ended; grpc#43462), and freed of its traceback:
    grpc raises a failed stream's call object itself as the error, so that traceback's frames
    hold the call, a cycle only the garbage collector breaks, in whatever thread and at
    whatever moment it runs. Its finalizer then takes the call's lock; run at interpreter exit,
    after grpc's channel thread died holding that lock, it waited forever: a follower that
    never ended (issue 16, item 19).
    """
    call.cancel()
    if isinstance(call, BaseException):
        call.__traceback__ = None
        call.__context__ = None


class _Cursor:
    """Where a follower stands in a log, so that a new stream resumes at the next byte."""

    def __init__(
        self,
        job_id: int,
        offset: int | None,
        since_time: float | None = None,
        timestamps: bool = False,
    ) -> None:
        self._job_id = job_id
        self._since_time = since_time
        self._timestamps = timestamps
        # None until the first byte when starting from the last N lines.
        self.next_offset = offset
        # A stream resumed at an offset is sent the events at that offset again, in the same
        # order: the messages of those already shown there, and how many of them the new
        # stream has resent so far. (Two events may say the same at one offset: both count.)
        self._events_offset: int | None = None
        self._events_here: list[str] = []
        self._resent = 0
        self._grep: tuple[str, ...] = ()
        self._exclude: tuple[str, ...] = ()

    def filter(self, grep: tuple[str, ...], exclude: tuple[str, ...]) -> None:
        """Asks for the lines these patterns select (SubscribeRequest.grep/exclude): chunks
        may then skip bytes, never go back."""
        self._grep, self._exclude = grep, exclude

    def resume(self, resumed: Resumed) -> None:
        """Stands where `resumed` says (the events there are sent again: not shown twice)."""
        self.next_offset = resumed.next_offset
        self._events_offset = resumed.events_offset
        self._events_here = list(resumed.events_here)

    def request(self, follow: bool, tail_lines: int | None) -> pb.SubscribeRequest:
        self._resent = 0
        request = pb.SubscribeRequest(
            job_id=self._job_id,
            follow=follow,
            timestamps=self._timestamps,
            grep=self._grep,
            exclude=self._exclude,
        )
        if self.next_offset is None and self._since_time is not None:
            request.since_time = self._since_time
        elif self.next_offset is None:
            request.tail_lines = tail_lines or 0
        else:
            request.offset = self.next_offset
        return request

    def accept(self, item: LogItem) -> LogItem | None:
        """Moves past `item`; None for an item already seen."""
        if isinstance(item, LogChunk):
            filtered = bool(self._grep or self._exclude)
            expected = self.next_offset
            if expected is not None and (
                item.offset < expected if filtered else item.offset != expected
            ):
                raise ProtocolError(
                    f"job {self._job_id}: expected bytes at offset {self.next_offset}, "
                    f"got offset {item.offset}"
                )
            self.next_offset = item.offset + len(item.data)
        elif isinstance(item, LogEvent):
            if self._events_offset is not None and item.offset < self._events_offset:
                # Shown already: a filtered stream resumes at its last chunk's end, which may
                # lie before events sent among the lines it skipped since.
                return None
            if item.offset != self._events_offset:
                self._events_offset, self._events_here, self._resent = item.offset, [], 0
            here = self._events_here
            if self._resent < len(here) and here[self._resent] == item.message:
                self._resent += 1
                return None
            here.append(item.message)
            self._resent = len(here)
        elif isinstance(item, LogEnd) and self.next_offset is None:
            self.next_offset = item.log_size
        return item


def _log_item(message: pb.SubscribeResponse) -> LogItem:
    kind = message.WhichOneof("message")
    if kind == "chunk":
        return LogChunk(message.chunk.offset, message.chunk.data)
    if kind == "event":
        return LogEvent(message.event.offset, message.event.message)
    if kind == "end":
        end = message.end
        return LogEnd(
            state=state_of(end.state),
            exit_code=end.exit_code if end.HasField("exit_code") else None,
            reason=end.reason,
            log_size=end.log_size,
            finished=end.finished,
        )
    if kind == "heartbeat":
        return LogHeartbeat(message.heartbeat.log_size, state_of(message.heartbeat.state))
    if kind == "time_mark":
        return LogTimeMark(message.time_mark.offset, message.time_mark.time)
    raise ProtocolError(f"unexpected message from the daemon: {kind}")
