"""Which of Redis's refusals are one job's fault, not Redis's.

Someone who can write to Redis may plant anything under a job's keys: its stream replaced by
a string (Redis answers WRONGTYPE), or an entry past the size its record says (XADD then
refuses every id the holder writes, which must move forward). Redis answers those commands
with an error, but it is reachable, and every other job goes on: the error becomes a
`BrokenJobKeys` naming the job, which fails (or stops being read here), once. Only errors of
the connection, or of Redis as a whole, make a node say Redis is unreachable.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ResponseError

from tailhub.daemon.errors import BrokenJobKeys

if TYPE_CHECKING:
    import redis.asyncio

_T = TypeVar("_T")
# A job's keys (`tailhub:log:ID`, `tailhub:job:ID`): the jobs a script's keys concern.
_JOB_KEY = re.compile(r"tailhub:(?:log|job):([0-9]{1,18})")
# What TYPE says of a key XREAD can read (a stream not made yet is none).
_STREAMS = (b"stream", b"none", "stream", "none")


def job_fault(error: ResponseError, job_ids: Sequence[int]) -> BrokenJobKeys | None:
    """The error as these jobs' fault, or None when it is none of theirs (Redis's own)."""
    text = str(error)
    if not job_ids:
        return None
    streams = ", ".join(f"tailhub:log:{job_id}" for job_id in job_ids)
    if text.startswith("WRONGTYPE"):
        hashes = ", ".join(f"tailhub:job:{job_id}" for job_id in job_ids)
        why = f"its keys in Redis ({streams}, {hashes}) are not all of their type (WRONGTYPE)"
    elif "ID specified in XADD" in text:
        why = (
            f"its stream in Redis ({streams}) holds an entry past the size its record says, "
            "so the log cannot go on there"
        )
    else:
        return None
    return BrokenJobKeys(f"Redis refuses to write this job's log: {why}", tuple(job_ids))


async def on_job(job_ids: Sequence[int], call: Awaitable[_T]) -> _T:
    """Awaits a command on these jobs' keys; a refusal that is theirs is `BrokenJobKeys`."""
    try:
        return await call
    except ResponseError as error:
        fault = job_fault(error, job_ids)
        if fault is None:
            raise
        raise fault from error


async def job_size(job_id: int, call: Awaitable[Any]) -> int:
    """A job's size as its hash holds it (none: 0); one that is no byte count is its fault."""
    held = await on_job([job_id], call)
    if held is None:
        return 0
    if not isinstance(held, bytes) or not held.isdigit() or len(held) >= 20:
        raise BrokenJobKeys(
            f"its size in Redis (tailhub:job:{job_id}) is no byte count: {held!r:.40}", (job_id,)
        )
    return int(held)


class JobScript:
    """A Lua script whose refusals on a job's keys (named in its KEYS) are that job's."""

    def __init__(self, script: Any) -> None:
        self._script = script

    async def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        job_ids = sorted({int(found) for key in keys for found in _JOB_KEY.findall(key)})
        return await on_job(job_ids, self._script(keys=keys, args=args))


async def read_streams(
    client: redis.asyncio.Redis, streams: dict[str, bytes], *, count: int, block: int | None
) -> Any:
    """XREAD over several jobs' streams. A key that is no stream fails the whole read: the
    jobs whose key it is are found (TYPE) and raised as `BrokenJobKeys`."""
    try:
        return await client.xread(streams, count=count, block=block)  # type: ignore[arg-type]
    except ResponseError as error:
        if not str(error).startswith("WRONGTYPE"):
            raise
        pipe = client.pipeline(transaction=False)
        for key in streams:
            pipe.type(key)
        types: Any = await pipe.execute()
        bad = [key for key, kind in zip(streams, types, strict=True) if kind not in _STREAMS]
        job_ids = [int(found) for key in bad for found in _JOB_KEY.findall(key)]
        if not job_ids:
            raise
        raise BrokenJobKeys(
            f"its stream in Redis ({', '.join(bad)}) is a key of another type "
            "(someone replaced it): its log cannot be read from there",
            tuple(job_ids),
        ) from error
