"""The CLI's lean path: a follower that costs less than an ssh session (issue 19, item 4).

`tailhub jobs logs` and `tailhub jobs launch` against this machine's daemon, spoken over its
owner endpoint (_owner_link.py) with the standard library alone: no grpc, protobuf or click
is imported, which were two thirds of a follower's start. What they print and exit with is the
full CLI's, byte for byte. The full CLI runs instead, from the start, for anything else:

- covered: `tailhub [--home DIR] jobs logs [--home DIR] [-f|--follow|--no-follow]
  [--tail N] [JOB_ID]` and `tailhub [--home DIR] jobs launch [--home DIR] [--async]
  [-n|--name NAME] [--env KEY[=VALUE]]... [--backend local|skypilot] TASK_FILE`;
- not covered (the full CLI): job names, several jobs, --all, --since, --timestamps, --grep,
  --exclude, -o json, --prefix, --launch-key, a config.yaml in the home, --server or
  $TAILHUB_SERVER (remote daemons, tokens, TLS, a cluster's list), any option spelled
  otherwise, --help; a terminal on stderr (the pending line asks the daemon more);
- no owner endpoint answers (no daemon: the full CLI starts one, of the home's kind; a cluster
  node, or an older daemon, serves none; a home that fails the trust checks): the full CLI.
- the daemon refuses the request (no such job, a launch's limits...): the full CLI makes the
  same call over gRPC, which says so in its own words (nothing was done or printed yet).

Once a log is being written, a stream that breaks (the daemon stopping or gone) or ends with an
error goes on over gRPC from the next byte (_lean_resume.py): the reconnects, their messages
and the errors are the full CLI's own.
"""

from __future__ import annotations

import os
import sys

from tailhub.client._lean_args import Plan, home_flag, home_path, parse
from tailhub.client._owner_link import OFFSET, Broken, OwnerLink, Unusable
from tailhub.client._printable import job_label, printable

# Not typing's: importing typing (and the re it imports) was a tenth of a follower's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from tailhub.client._owner_link import Response

    # A log's item: ("C", offset, bytes), ("E", offset, message), ("Z", log size, LeanEnd).
    Item = tuple[str, int, Any]

# Exit codes (exit_codes.py), as the full CLI gives them.
_SUCCEEDED, _ERROR, _FAILED, _NOT_FINISHED, _CANCELLED, _INTERRUPTED = 0, 1, 100, 101, 103, 130


class LeanEnd:
    """A log stream's end (the daemon's Ended): how the job stands."""

    def __init__(
        self, state: str, exit_code: int | None, reason: str, log_size: int, finished: bool
    ) -> None:
        self.state = state
        self.exit_code = exit_code
        self.reason = reason
        self.log_size = log_size
        self.finished = finished


class Cursor:
    """Where a lean follower stands, handed to the gRPC path if the stream breaks (its
    `_Cursor`: the next byte, and the events already shown at the last event's offset)."""

    def __init__(self, job_id: int, offset: int | None) -> None:
        self.job_id = job_id
        self.next_offset = offset
        self.events_offset: int | None = None
        self.events_here: list[str] = []

    def chunk(self, offset: int, size: int) -> None:
        if self.next_offset is not None and offset != self.next_offset:
            from tailhub.client._errors import ProtocolError

            raise ProtocolError(
                f"job {self.job_id}: expected bytes at offset {self.next_offset}, "
                f"got offset {offset}"
            )
        self.next_offset = offset + size

    def event(self, offset: int, message: str) -> None:
        if offset != self.events_offset:
            self.events_offset, self.events_here = offset, []
        self.events_here.append(message)


def lean_command(argv: list[str]) -> Callable[[], int | None] | None:
    """The command for `argv` if the lean path covers it: it returns the exit code, or None
    when the full CLI must run (nothing was done or printed then). None: not covered."""
    if "TAILHUB_SERVER" in os.environ or os.environ.get("TAILHUB_LEAN") == "0":
        return None  # (TAILHUB_LEAN=0: the full CLI always, to compare or to rule this out)
    plan = parse(argv)
    if plan is None:
        return None
    if plan.command == "logs":
        if plan.follow and sys.stderr.isatty():
            return None  # the pending line (_pending.py)
        return lambda: _run(_logs, plan)
    if sys.stderr.isatty():
        return None
    return lambda: _run(_launch, plan)


def _run(command: Callable[[Plan], int], plan: Plan) -> int | None:
    """Runs `command` as the full CLI's main would: its errors as one line and an exit code."""
    try:
        return command(plan)
    except Unusable:
        return None
    except BrokenPipeError:
        _drop_stdout()
        return _SUCCEEDED
    except KeyboardInterrupt:
        return _INTERRUPTED
    except Exception as error:
        errors = sys.modules.get("tailhub.client._errors")
        if errors is not None and isinstance(error, errors.TailhubError):
            note(str(error))
            return int(error.exit_code)
        if isinstance(error, OSError):
            filename = f": {error.filename}" if error.filename else ""
            note(f"{error.strerror or error}{filename}")
            return _ERROR
        raise
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _drop_stdout()
        except ValueError:
            pass


def note(message: str) -> None:
    """_output.note without click: one line on stderr."""
    sys.stderr.write(f"tailhub: {printable(message)}\n")
    sys.stderr.flush()


def _drop_stdout() -> None:
    """As cli._drop_stdout: stdout to /dev/null, so that the flush at exit cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# -- jobs logs ---------------------------------------------------------------------------------
def _logs(plan: Plan) -> int:
    link = OwnerLink.open(home_path(plan))
    try:
        job_id = plan.job_id if plan.job_id is not None else _latest(link)
        start = f"tail_lines={plan.tail}" if plan.tail is not None else "offset=0"
        try:
            response = link.request(
                "GET", f"/v1/jobs/{job_id}/log?{start}&follow={int(plan.follow)}"
            )
        except Broken:
            raise Unusable("no answer") from None
        if response.status != 200:
            response.close()
            raise Unusable("refused: the full CLI says why")
        again = f"tailhub jobs logs{home_flag(plan)} -f {job_id}" if plan.follow else ""
        cursor = Cursor(job_id, None if plan.tail is not None else 0)
        items = _items(plan, response, cursor, tail=plan.tail)
        end = copy_log(items, job_id, again)
        failed = end.finished and end.state == "FAILED"
        return result_exit_code(end, _label(link, job_id) if failed else "job")
    finally:
        link.close()


def _latest(link: OwnerLink) -> int:
    """The newest job's id (_names.latest_job); Unusable when there is none: the full CLI
    says so."""
    try:
        page = link.request("GET", "/v1/jobs?page_size=1")
        listed = page.json() if page.status == 200 else None
    except Broken:
        listed = None
    jobs = listed.get("jobs") if isinstance(listed, dict) else None
    if not jobs or not isinstance(jobs[0], dict) or not isinstance(jobs[0].get("id"), int):
        raise Unusable("no job, or no answer")
    return int(jobs[0]["id"])


def _label(link: OwnerLink, job_id: int) -> str:
    """`job 17 (train)` (_logs_cli._label): the name asked for only when a line needs it."""
    try:
        response = link.request("GET", f"/v1/jobs/{job_id}")
        answer = response.json() if response.status == 200 else None
    except (Broken, Unusable):
        answer = None
    job = answer.get("job") if isinstance(answer, dict) else None
    name = job.get("name") if isinstance(job, dict) else None
    return job_label(job_id, name if isinstance(name, str) else "")


def _items(plan: Plan, response: Response, cursor: Cursor, *, tail: int | None) -> Iterator[Item]:
    """The log's items from the owner endpoint; from gRPC, at the next byte, once its stream
    breaks or ends with an error (_lean_resume.py)."""
    broken = True
    try:
        for kind, payload in response.frames():
            if kind == b"C":
                offset = _offset(payload)
                data = payload[OFFSET.size :]
                cursor.chunk(offset, len(data))
                yield ("C", offset, data)
            elif kind == b"E":
                offset = _offset(payload)
                message = payload[OFFSET.size :].decode("utf-8", "replace")
                cursor.event(offset, message)
                yield ("E", offset, message)
            elif kind == b"Z":
                end = _end(payload)
                yield ("Z", end.log_size, end)
                return
            elif kind == b"X":
                # As gRPC's is_transient: the daemon stopping ends a stream to be resumed.
                broken = payload.split(b"\n", 1)[0] in (b"UNAVAILABLE", b"CANCELLED")
                break
    except Broken:
        pass
    finally:
        response.close()
    from tailhub.client._lean_resume import resume

    yield from resume(home_path(plan), cursor, follow=plan.follow, tail=tail, broken=broken)


def _offset(payload: bytes) -> int:
    if len(payload) < OFFSET.size:
        from tailhub.client._errors import ProtocolError

        raise ProtocolError("unexpected message from the daemon: a frame without its offset")
    return int(OFFSET.unpack_from(payload)[0])


def _end(payload: bytes) -> LeanEnd:
    """An end frame: state, exit code, finished, log size and reason, one a line."""
    try:
        state, exit_code, finished, size, reason = payload.decode("utf-8").split("\n", 4)
        return LeanEnd(
            state, int(exit_code) if exit_code else None, reason, int(size), finished == "1"
        )
    except ValueError:
        from tailhub.client._errors import ProtocolError

        raise ProtocolError("unexpected message from the daemon: a bad end") from None


def copy_log(items: Iterator[Item], job_id: int, again: str) -> LeanEnd:
    """_output.copy_log, plain: the log to stdout as it comes, events to stderr."""
    out = sys.stdout.buffer
    try:
        for item in items:
            kind, _, value = item
            if kind == "C":
                out.write(value)
                out.flush()
            elif kind == "E":
                note(f"job {job_id}: {value}")
            else:
                assert isinstance(value, LeanEnd)
                return value
    except Exception as error:
        errors = sys.modules.get("tailhub.client._errors")
        if again and errors is not None and isinstance(error, errors.DaemonUnreachable):
            raise errors.DaemonUnreachable(
                f"{error}; follow it again once it is back: {again}"
            ) from None
        raise
    raise AssertionError("a log stream always ends with its end")


def result_exit_code(end: LeanEnd, label: str) -> int:
    """_output.result_exit_code: the job's result, and why on stderr when it failed."""
    if not end.finished:
        return _NOT_FINISHED
    if end.state == "SUCCEEDED":
        return _SUCCEEDED
    if end.state == "CANCELLED":
        return _CANCELLED
    if end.state == "FAILED":
        note(f"{label} failed: {end.reason}" if end.reason else f"{label} failed")
    return _FAILED


# -- jobs launch -------------------------------------------------------------------------------
def _launch(plan: Plan) -> int:
    link = OwnerLink.open(home_path(plan))
    try:
        return _launch_with(link, plan)
    finally:
        link.close()


def _launch_with(link: OwnerLink, plan: Plan) -> int:
    backend = plan.backend or os.environ.get("TAILHUB_BACKEND", "")
    if backend not in ("", "local", "skypilot") or (not backend and link.has_file("config.yaml")):
        raise Unusable("an unknown backend, or the home's config.yaml: the full CLI reads it")
    import json
    from pathlib import Path

    from tailhub.client._tasks import load_task, parse_env_overrides, read_task_text, task_name
    from tailhub.daemon.credentials import without_credentials

    overrides = parse_env_overrides(tuple(plan.envs))
    assert plan.task_file is not None
    task_file = Path(plan.task_file)
    # One key per invocation: sent again while the daemon does not answer, one job.
    key = os.urandom(16).hex()
    # The job runs (or `sky` does) in this shell's environment, not the daemon's.
    environment = without_credentials(os.environ)
    warnings: tuple[str, ...] = ()
    if backend == "skypilot":  # (as _launch_cli.py sends it)
        task_yaml = read_task_text(task_file)
        fields = {
            "name": plan.name or task_name(task_file, task_yaml),
            "workdir": str(task_file.resolve().parent),
            "envs": overrides,
            "environment": environment,
            "backend": "skypilot",
            "task_yaml": task_yaml,
            "launch_key": key,
        }
    else:
        task = load_task(task_file).with_overrides(plan.name, overrides)
        warnings = task.warnings
        fields = {
            "name": task.name,
            "run": task.run,
            "setup": task.setup,
            "workdir": task.workdir or os.getcwd(),
            "envs": task.envs,
            "environment": environment,
            "backend": "local",
            "launch_key": key,
        }
    body = json.dumps(fields, ensure_ascii=True).encode()
    job_id, name = _submit(link, body, home_path(plan), key)
    for warning in warnings:
        note(f"warning: {warning}")
    if plan.detach:
        sys.stdout.write(f"{job_id}\n")
        return _SUCCEEDED
    note(f"job {job_id} submitted; following its log (Ctrl-C stops following, not the job)")
    flag = home_flag(plan)
    try:
        end = copy_log(
            _launched_items(link, plan, job_id), job_id, f"tailhub jobs logs{flag} -f {job_id}"
        )
    except KeyboardInterrupt:
        note(
            f"stopped following job {job_id}; it goes on. Follow again: "
            f"tailhub jobs logs{flag} {job_id}; cancel it: tailhub jobs cancel{flag} {job_id}"
        )
        return _INTERRUPTED
    return result_exit_code(end, job_label(job_id, name))


def _submit(link: OwnerLink, body: bytes, home: str, key: str) -> tuple[int, str]:
    """Launches; the job's id and name. Unusable when the daemon refused it before doing
    anything (the full CLI launches over gRPC and is refused in its words)."""
    sock = link.connect()
    response, answer = _post_patiently(link, body, sock, home, key)
    if response.status != 200:
        refusal = answer.get("error") if isinstance(answer, dict) else None
        kind = refusal.get("kind") if isinstance(refusal, dict) else None
        if kind == "INTERNAL" or kind is None:
            from tailhub.client._errors import TailhubError

            message = refusal.get("message", "") if isinstance(refusal, dict) else ""
            raise TailhubError(f"daemon error INTERNAL: {message}")
        raise Unusable("refused: nothing was launched")
    job = answer.get("job") if isinstance(answer, dict) else None
    if not isinstance(job, dict) or not isinstance(job.get("id"), int):
        from tailhub.client._errors import ProtocolError

        raise ProtocolError("unexpected answer from the daemon to a launch")
    name = job.get("name")
    return job["id"], name if isinstance(name, str) else ""


def _post_patiently(
    link: OwnerLink, body: bytes, sock: Any, home: str, key: str
) -> tuple[Response, object]:
    """POSTs the launch, and again with its key (on a new connection) while the daemon does
    not answer in time or goes away, for the launch's patience (_patience.py)."""
    import time

    from tailhub.client import _patience

    try:
        timeout = _patience.seconds("TAILHUB_CALL_TIMEOUT", _patience.CALL_TIMEOUT)
        patience = _patience.seconds("TAILHUB_LAUNCH_PATIENCE", _patience.LAUNCH_PATIENCE)
    except ValueError:
        sock.close()
        raise Unusable("the full CLI says what is wrong with the variable") from None
    give_up, pause, told = time.monotonic() + patience, 0.05, False
    while True:
        try:
            response = link.request("POST", "/v1/jobs", body, sock, timeout)
            if response.status == 503 and sock is None:  # (a retry: may have been launched)
                response.close()
                raise Broken("the daemon is stopping")
            return response, response.json()
        except (Broken, Unusable) as problem:
            # It may have been launched: only ever sent again with its key, never anew.
            if time.monotonic() + pause >= give_up:
                from tailhub.client._errors import DaemonUnreachable

                address = f"unix:{os.path.normpath(home)}/sock"
                stopped = f"the daemon on {address} did not answer ({problem})"
                raise DaemonUnreachable(_patience.gave_up(stopped, patience, key)) from None
            if not told:
                note(_patience.SLOW)
                told = True
        time.sleep(pause)  # (a daemon gone is refused at once: no busy loop)
        pause, sock = min(pause * 2, 1.0), None


def _launched_items(link: OwnerLink, plan: Plan, job_id: int) -> Iterator[Item]:
    """The launched job's log from its start (its follow: over gRPC if the endpoint fails)."""
    cursor = Cursor(job_id, 0)
    try:
        response = link.request("GET", f"/v1/jobs/{job_id}/log?offset=0&follow=1")
    except (Broken, Unusable):
        response = None
    if response is not None and response.status == 200:
        yield from _items(plan, response, cursor, tail=None)
        return
    if response is not None:
        response.close()
    from tailhub.client._lean_resume import resume

    broken = response is None or response.status == 503  # (the daemon stopping)
    yield from resume(home_path(plan), cursor, follow=True, tail=None, broken=broken)
