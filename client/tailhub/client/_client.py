"""The client library: a synchronous gRPC client of one daemon, or of a cluster's daemons."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from tailhub.client._daemon import ensure_daemon
from tailhub.client._errors import (
    DaemonUnreachable,
    JobNotFoundError,
    TailhubError,
    from_rpc_error,
)
from tailhub.client._follow import (
    DEFAULT_RECONNECT_TIMEOUT,
    MAX_RETRY_PAUSE,
    MIN_RETRY_PAUSE,
    Outages,
    Resumed,
    follow_log,
)
from tailhub.client._patience import CALL_TIMEOUT, LAUNCH_PATIENCE, SLOW, gave_up
from tailhub.client._remote import CONNECT_TIMEOUT, Target
from tailhub.client._servers import Servers, StubMethod
from tailhub.client._types import (
    CancelResult,
    DaemonStatus,
    JobEvent,
    JobInfo,
    JobPage,
    LogItem,
    RemoveResult,
)
from tailhub.daemon.errors import UntrustedState
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.statedir import check_socket, check_state_dir
from tailhub.v1 import tailhub_pb2 as pb

# Reconnect quickly after a daemon restart: gRPC's default backoff grows to two minutes.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
_CALL_TIMEOUT = CALL_TIMEOUT
# Jobs asked for per ListJobs call (the daemon serves at most 1000).
_PAGE_SIZE = 500

T = TypeVar("T")


class Client:
    """One connection to a daemon, or to a list of a cluster's daemons. Use `connect()` or
    `connect_remote()`; close it, or use it as a context manager.

    With a list, the order is the preference. A call that cannot connect to one daemon goes
    to the next; a read (get, list, status) also goes on when its daemon fails it as
    unavailable; a call that changes something never does once it may have reached a daemon,
    so that nothing runs twice, unless that daemon answered that it did nothing and another
    may take it (its cluster's Redis is unreachable from it). A follow resumes on the next
    daemon at the next byte.
    """

    def __init__(
        self,
        paths: StatePaths | None,
        target: Target | Sequence[Target] | None = None,
        *,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        # None for a remote daemon: its state directory is on another machine.
        self.paths = paths
        # Told, in one line each, when a call waits for its daemon, when a follow loses its
        # daemon and when it is back.
        self._on_wait = on_wait
        self._closed = False
        if target is None:
            if paths is None:
                raise ValueError("a client needs a state directory or a remote target")
            self._servers = Servers.local(paths, _CHANNEL_OPTIONS)
        else:
            targets = [target] if isinstance(target, Target) else list(target)
            self._servers = Servers.remote(targets, _CHANNEL_OPTIONS)
        self._outages = Outages(self._servers, paths, on_wait)

    @property
    def address(self) -> str:
        """Where errors say the daemon is: its socket, or the remote HOST:PORT in use."""
        return self._servers.address(self._servers.current)

    @classmethod
    def connect_remote(
        cls, target: Target | Sequence[Target], *, connect_timeout: float = CONNECT_TIMEOUT
    ) -> Client:
        """A client of the daemon at `target`, or of the first of a list that answers (never
        started from here), each given `connect_timeout` seconds: DaemonUnreachable when none
        answers, SecureConnectionError when TLS cannot be agreed on; with a list, one error
        naming each daemon tried."""
        client = cls(None, target)
        try:
            client._servers.connect_first(connect_timeout)
        except BaseException:
            client.close()
            raise
        return client

    @classmethod
    def connect(
        cls,
        paths: StatePaths,
        *,
        autostart: bool = True,
        daemon_args: Sequence[str] = (),
        on_wait: Callable[[str], None] | None = None,
    ) -> Client:
        """A client of the daemon serving `paths`, started first if `autostart` and none answers.

        Refuses (TailhubError) a state directory or socket someone else could have planted:
        nothing is sent to a daemon that is not the user's own (or root's). On a cluster
        node's state directory nothing is started: it waits for the node's own daemon, and
        `on_wait` is told so in one line. A follow tells `on_wait`, in one line each, when it
        loses its daemon and when it is served again.
        """
        try:
            check_state_dir(paths.home)
            if autostart:
                ensure_daemon(paths, daemon_args, on_wait=on_wait)
            check_socket(paths.socket)
        except UntrustedState as error:
            raise TailhubError(str(error)) from None
        return cls(paths, on_wait=on_wait)

    def close(self) -> None:
        # Follows in other threads see their streams break: they end quietly, with no
        # "lost the daemon" line (the CLI closes the client on Ctrl-C).
        self._closed = True
        self._servers.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: StubMethod[T],
        request: Any,
        *,
        read: bool = False,
        timeout: float = _CALL_TIMEOUT,
    ) -> T:
        """Calls `method` (picked from a stub) on the current daemon; with a list, fails over
        to the next ones as the class says (`read`: a call that changes nothing).

        A daemon that did nothing and says it may take the call later (`retry_later`: its
        cluster's Redis is unreachable) is called again, after a growing pause, until
        `timeout` has passed; `on_wait` is told once."""
        give_up = time.monotonic() + timeout
        pause = MIN_RETRY_PAUSE
        told = False
        while True:
            try:
                return self._call_once(method, request, read, max(give_up - time.monotonic(), 1))
            except TailhubError as error:
                left = give_up - time.monotonic()
                if not error.retry_later or left <= pause:
                    raise
                if not told and self._on_wait is not None:
                    self._on_wait(f"{error}; trying again for up to {left:.0f} s")
                    told = True
            time.sleep(pause)
            pause = min(pause * 2, MAX_RETRY_PAUSE)

    def _call_once(self, method: StubMethod[T], request: Any, read: bool, timeout: float) -> T:
        if len(self._servers) > 1:
            return self._servers.call(method, request, timeout, read=read)
        try:  # wait for the daemon within the call's time (a restart)
            stub = self._servers.stub(0)
            return method(stub)(request, timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.address) from None

    # -- jobs ------------------------------------------------------------------------------
    def attach_file(self, path: str, name: str = "") -> JobInfo:
        request = pb.AttachJobRequest(name=name, file=pb.FileSource(path=path))
        return JobInfo.from_pb(self._call(lambda stub: stub.AttachJob, request).job)

    def attach_command(
        self,
        argv: Sequence[str],
        *,
        name: str = "",
        shell: bool = False,
        transport_exit_codes: Sequence[int] = (),
        stderr_events: bool = False,
    ) -> JobInfo:
        """A job whose log is the command's output; `stderr_events` reports stderr lines as
        events instead of merging them into the log."""
        source = pb.CommandSource(
            argv=argv,
            shell=shell,
            transport_exit_codes=transport_exit_codes,
            stderr=pb.STDERR_MODE_EVENTS if stderr_events else pb.STDERR_MODE_MERGE,
        )
        request = pb.AttachJobRequest(name=name, command=source)
        return JobInfo.from_pb(self._call(lambda stub: stub.AttachJob, request).job)

    def attach_skypilot(self, managed_job_id: int, name: str = "") -> JobInfo:
        """Follows a SkyPilot managed job launched elsewhere (one `sky jobs logs` for it)."""
        source = pb.SkyPilotSource(managed_job_id=managed_job_id)
        request = pb.AttachJobRequest(name=name, skypilot=source)
        return JobInfo.from_pb(self._call(lambda stub: stub.AttachJob, request).job)

    def attach_push(self, name: str = "") -> JobInfo:
        request = pb.AttachJobRequest(name=name, push=pb.PushSource())
        return JobInfo.from_pb(self._call(lambda stub: stub.AttachJob, request).job)

    def launch(
        self,
        run: str,
        *,
        name: str = "",
        setup: str = "",
        workdir: str = "",
        envs: Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
        backend: str = "",
        task_yaml: str = "",
        launch_key: str = "",
        call_timeout: float = _CALL_TIMEOUT,
        patience: float = LAUNCH_PATIENCE,
        on_slow: Callable[[str], None] | None = None,
    ) -> JobInfo:
        """Launches a task; it runs with `environment` (the caller's, typically `os.environ`)
        plus `envs`. Without `environment`, a minimal one (HOME, USER, PATH...) of the daemon's.

        `backend` "skypilot" submits `task_yaml` (the task file's text) with the daemon's
        `sky` from `workdir`; empty: the daemon's default backend.

        Launched once, whatever the daemon's delays: the call carries `launch_key` (empty: a
        random one), and a daemon that does not answer within `call_timeout` seconds (or goes
        away meanwhile) is called again with it, on the same daemon, for up to `patience`
        seconds in all; `on_slow` (else the client's `on_wait`) is told once. It then raises
        DaemonUnreachable saying the job may have been launched, and its key."""
        key = launch_key or secrets.token_hex(16)
        request = pb.LaunchJobRequest(
            launch_key=key,
            name=name,
            run=run,
            setup=setup,
            workdir=workdir,
            envs=dict(envs or {}),
            environment=dict(environment or {}),
            backend=backend,
            task_yaml=task_yaml,
        )
        answer = self._launch_job(request, call_timeout, patience, on_slow or self._on_wait)
        return JobInfo.from_pb(answer.job)

    def _launch_job(
        self,
        request: pb.LaunchJobRequest,
        call_timeout: float,
        patience: float,
        on_slow: Callable[[str], None] | None,
    ) -> pb.LaunchJobResponse:
        """LaunchJob, called again with its key while the daemon that got it does not answer
        in time (see `launch`). Only that daemon: another would not know the key."""
        give_up = time.monotonic() + patience
        sent_to: list[Any] = []  # the stub each try went through (a list: the one used)

        def launch_job(stub: Any) -> Callable[..., pb.LaunchJobResponse]:
            sent_to.append(stub)
            return stub.LaunchJob  # type: ignore[no-any-return]

        pause = MIN_RETRY_PAUSE
        told = False
        while True:
            timeout = min(call_timeout, max(give_up - time.monotonic(), 1))
            try:
                if not sent_to:  # the first try: to whichever daemon takes it
                    return self._call(launch_job, request, timeout=timeout)
                return self._call_stub(sent_to[-1], launch_job, request, timeout)
            except DaemonUnreachable as error:
                # Nothing sent, or a daemon that said it did nothing: as any other call.
                if not sent_to or error.retry_later:
                    raise
                if time.monotonic() + pause >= give_up:
                    raise DaemonUnreachable(
                        gave_up(str(error), patience, request.launch_key)
                    ) from None
                if not told and on_slow is not None:
                    on_slow(SLOW)
                    told = True
            time.sleep(pause)  # (a daemon stopping answers at once: no busy loop)
            pause = min(pause * 2, MAX_RETRY_PAUSE)

    def _call_stub(self, stub: Any, method: StubMethod[T], request: Any, timeout: float) -> T:
        """Calls `method` through `stub` (one daemon's), waiting for it to be connected."""
        index = next(i for i in range(len(self._servers)) if self._servers.stub(i) is stub)
        try:
            return method(stub)(request, timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self._servers.address(index)) from None

    def publish(self, job_id: int, data: bytes, expected_offset: int | None = None) -> int:
        """Appends to a push job's log; returns its size.

        With `expected_offset` (where the producer believes the log ends), a retry of a call
        that was applied appends nothing, so a producer can retry after any error without
        duplicating bytes; a wrong offset raises InvalidRequestError.
        """
        request = pb.PublishRequest(job_id=job_id, data=data, expected_offset=expected_offset)
        return self._call(lambda stub: stub.Publish, request).log_size

    def finish(self, job_id: int, exit_code: int = 0, reason: str = "") -> JobInfo:
        request = pb.FinishJobRequest(job_id=job_id, exit_code=exit_code, reason=reason)
        return JobInfo.from_pb(self._call(lambda stub: stub.FinishJob, request).job)

    def cancel(self, job_ids: Sequence[int] = (), *, everything: bool = False) -> list[JobInfo]:
        """Cancels jobs; returns the named and cancelled jobs in their state after it.

        Raises JobNotFoundError for an id the daemon does not have (the others are cancelled
        all the same); `cancel_jobs` reports every id instead.
        """
        result = self.cancel_jobs(job_ids, everything=everything)
        if result.unknown_job_ids:
            raise JobNotFoundError(f"job {result.unknown_job_ids[0]} not found")
        return sorted([*result.cancelled, *result.already_ended], key=lambda job: job.id)

    def cancel_jobs(self, job_ids: Sequence[int] = (), *, everything: bool = False) -> CancelResult:
        """Cancels jobs and says, per named id, what became of it."""
        request = pb.CancelJobsRequest(job_ids=job_ids, all=everything)
        response = self._call(lambda stub: stub.CancelJobs, request)
        return CancelResult(
            cancelled=[JobInfo.from_pb(job) for job in response.jobs],
            unknown_job_ids=list(response.unknown_job_ids),
            already_ended=[JobInfo.from_pb(job) for job in response.already_ended],
        )

    def remove(
        self, job_ids: Sequence[int] = (), *, ended_before: float | None = None
    ) -> RemoveResult:
        """Deletes ended jobs with their logs: those named, and those ended before a time."""
        request = pb.RemoveJobsRequest(job_ids=job_ids, ended_before=ended_before)
        response = self._call(lambda stub: stub.RemoveJobs, request)
        return RemoveResult(
            removed_job_ids=list(response.removed_job_ids),
            unknown_job_ids=list(response.unknown_job_ids),
            not_ended_job_ids=list(response.not_ended_job_ids),
            bytes_freed=response.bytes_freed,
        )

    def get(self, job_id: int) -> JobInfo:
        return JobInfo.from_pb(
            self._call(lambda stub: stub.GetJob, pb.GetJobRequest(job_id=job_id), read=True).job
        )

    def get_with_events(self, job_id: int) -> tuple[JobInfo, list[JobEvent]]:
        """The job and every source event it kept (at most 1000; the last says how many were
        dropped, if any were)."""
        request = pb.GetJobRequest(job_id=job_id)
        response = self._call(lambda stub: stub.GetJob, request, read=True)
        events = [JobEvent(e.offset, e.time, e.message) for e in response.events]
        return JobInfo.from_pb(response.job), events

    def list(self, limit: int | None = None) -> list[JobInfo]:
        """Jobs, newest first: the newest `limit`, or every one (fetched a page at a time)."""
        listed: list[JobInfo] = []
        token = ""
        while limit is None or len(listed) < limit:
            page = self.list_page(
                _PAGE_SIZE if limit is None else min(limit - len(listed), _PAGE_SIZE), token
            )
            listed.extend(page.jobs)
            token = page.next_page_token
            if not token:
                break
        return listed

    def list_page(self, page_size: int = 0, page_token: str = "") -> JobPage:
        """One page of jobs, newest first (page_size 0: the daemon's default)."""
        request = pb.ListJobsRequest(page_size=page_size, page_token=page_token)
        response = self._call(lambda stub: stub.ListJobs, request, read=True)
        return JobPage(
            jobs=[JobInfo.from_pb(job) for job in response.jobs],
            next_page_token=response.next_page_token,
            total_jobs=response.total_jobs,
        )

    def status(self, timeout: float = _CALL_TIMEOUT) -> DaemonStatus:
        """The daemon's figures and how it runs; waits at most `timeout` seconds for it."""
        response = self._call(
            lambda stub: stub.GetDaemonStatus,
            pb.GetDaemonStatusRequest(),
            read=True,
            timeout=timeout,
        )
        return DaemonStatus.from_pb(response)

    def web_login(self) -> tuple[str, float]:
        """A one-time login URL for the daemon's web view, and when its code expires (Unix
        seconds). InvalidRequestError (reason WEB_VIEW_OFF) when it serves none."""
        response = self._call(
            lambda stub: stub.CreateWebLogin, pb.CreateWebLoginRequest(), read=True
        )
        return response.url, response.expires_at

    # -- logs ------------------------------------------------------------------------------
    def follow(
        self,
        job_id: int,
        *,
        offset: int = 0,
        tail_lines: int | None = None,
        follow: bool = True,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        since_time: float | None = None,
        timestamps: bool = False,
        grep: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> Iterator[LogItem]:
        """Yields a job's log as chunks (and upstream events), then one LogEnd.

        It starts at `offset`, at the last `tail_lines` lines, or at the first line that
        reached the daemon at or after `since_time` (Unix seconds). With `timestamps`, a
        LogTimeMark comes before the chunk holding its offset: when those bytes arrived.
        With `grep`/`exclude` (RE2 patterns), the daemon sends only the matching whole lines,
        at their log offsets (SubscribeRequest.grep): a chunk may start past the last one's end.

        When the daemon restarts or the connection drops, it reconnects on its own (to the
        next daemon of a list, round robin) and resumes at the next offset: no byte is lost
        or repeated. It gives up with DaemonUnreachable when no daemon has answered for
        `reconnect_timeout` seconds. Every call it makes is cancelled and freed before it
        returns or raises: nothing of it is left to the garbage collector.
        """
        return follow_log(
            self._servers,
            self._outages,
            lambda: self._closed,
            job_id,
            offset=offset,
            tail_lines=tail_lines,
            follow=follow,
            reconnect_timeout=reconnect_timeout,
            since_time=since_time,
            timestamps=timestamps,
            grep=tuple(grep),
            exclude=tuple(exclude),
        )

    def resume_follow(
        self, job_id: int, resumed: Resumed, *, follow: bool, tail_lines: int | None
    ) -> Iterator[LogItem]:
        """`follow` going on from where a follow begun elsewhere stands (the CLI's lean path,
        whose stream broke or ended with an error): as `follow` from there on."""
        return follow_log(
            self._servers,
            self._outages,
            lambda: self._closed,
            job_id,
            offset=resumed.next_offset or 0,
            tail_lines=tail_lines,
            follow=follow,
            reconnect_timeout=DEFAULT_RECONNECT_TIMEOUT,
            since_time=None,
            timestamps=False,
            resumed=resumed,
        )
