"""The cluster's own keys, put right when somebody replaced one with a key of another type.

Whoever can write to Redis can SET `tailhub:jobs` (or `nodes`, or the id counter) to a string.
Every node then got WRONGTYPE on each round, said its Redis was unreachable and stopped every
fetch, and a launch failed until somebody deleted the key by hand. A node now replaces such a
key where it meets it and says so in its log: the id counter goes on from the highest id the
node knows (lua.NEXT_ID, and lua.NODE every quarter lease), the node names come back with their
next renewal (lua.NODE), and the index of jobs is rebuilt from the job records Redis holds
(here). Nothing of the cluster's is lost: the key held none of it. A job's lease key no node
wrote is replaced by a lease that ends (lua.HOLDERS), so that job is taken over instead of
standing still.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

if TYPE_CHECKING:
    import redis.asyncio

logger = logging.getLogger(__name__)

PREFIX = "tailhub:"
JOBS = PREFIX + "jobs"
# A job record's key, whose id goes back into the index.
_JOB_KEY = re.compile(rb"tailhub:job:([1-9][0-9]{0,17})")
_BATCH = 1000


def is_wrong_type(error: ResponseError) -> bool:
    return str(error).startswith("WRONGTYPE")


def said_replaced(key: str, what: str) -> None:
    logger.warning(
        "cluster: Redis key %s was a key of another type, not the cluster's (somebody wrote "
        "it there): replaced%s",
        key,
        what,
    )


async def rebuild_jobs_index(client: redis.asyncio.Redis) -> None:
    """Every job record's id back into `tailhub:jobs` (found of another type and replaced),
    said once in the log."""
    ids: list[int] = []
    async for key in client.scan_iter(match=PREFIX + "job:*", count=_BATCH):
        found = _JOB_KEY.fullmatch(key)
        if found:
            ids.append(int(found[1]))
    for start in range(0, len(ids), _BATCH):
        chunk: Any = {str(job_id): job_id for job_id in ids[start : start + _BATCH]}
        await client.zadd(JOBS, chunk)
    said_replaced(JOBS, f", and rebuilt from the {len(ids)} job record(s) Redis holds")


async def replace_jobs_index(client: redis.asyncio.Redis, replace: Any) -> None:
    """`tailhub:jobs` is of another type (a WRONGTYPE answer): deleted if it still is (the
    REPLACE_FOREIGN script), then rebuilt."""
    if await replace(keys=[JOBS], args=["zset"]):
        await rebuild_jobs_index(client)
