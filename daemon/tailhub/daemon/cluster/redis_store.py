"""The cluster's state in Redis: job ids and records, fetch leases, and a stream per job log.

Keys (all under `tailhub:`, in the database the URL names):
- `next_job_id`: INCR gives job ids, the same on every daemon.
- `jobs`: a sorted set of every job id; `job:ID`: a hash with the record (JSON), `size` (bytes
  stored), `first` (first offset still kept), `epoch` (leases granted), `holder`, `cancel`.
- `lease:ID`: "NODE EPOCH" while NODE fetches the job; it expires unless renewed.
- `log:ID`: the log. A data entry holding bytes [a, b) has the id `b-0` and the fields
  `o` (a), `d` (the bytes), `e` (the epoch that wrote it); an event at offset b is `b-N` with
  `v` (the message); the job's end is `b-N` with `end` (JSON). Redis refuses an id that does
  not move forward, so an append can never overwrite or go back.
- `node:NAME`: held by the daemon running as NAME; `changes`: pub/sub of job ids whose
  record changed.

Every write that needs the lease is one Lua script that checks it first (cluster/lua.py), so a
daemon that lost its lease (paused, partitioned, or just slow) can never write.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

if TYPE_CHECKING:
    import redis.asyncio

from tailhub.daemon.cluster import lua
from tailhub.daemon.cluster.key_faults import JobScript, job_size, read_streams
from tailhub.daemon.cluster.own_keys import (
    JOBS,
    is_wrong_type,
    rebuild_jobs_index,
    replace_jobs_index,
    said_replaced,
)
from tailhub.daemon.cluster.records import parse_record
from tailhub.daemon.config import MAX_LEASE_MS
from tailhub.daemon.errors import BadRecord, BrokenJobKeys, ClusterRefused, ClusterUnavailable

logger = logging.getLogger(__name__)

PREFIX = "tailhub:"
# Bounds on what a stream entry may hold (a holder writes at most 256 KiB of bytes and a
# short event); anything larger was not written by a daemon and is skipped, in Redis.
MAX_ENTRY_BYTES = 1024 * 1024
MAX_EVENT_BYTES = 4096
CHANGES = PREFIX + "changes"
_NODES = PREFIX + "nodes"
_NEXT_ID = PREFIX + "next_job_id"
# The token of a lease put in place of a key no node wrote (lua.HOLDERS): no node is named so.
PLACEHOLDER = "(replaced key) 0"


@dataclass(frozen=True)
class JobMeta:
    """What Redis holds of a job besides its log."""

    record: dict[str, Any]
    size: int
    first: int
    holder: str
    sealed: bool
    cancel: bool


@dataclass(frozen=True)
class LogEntry:
    """One entry of a job's stream: bytes at `offset`, or an event, or the job's end."""

    entry_id: bytes
    offset: int
    data: bytes | None = None
    event: str | None = None
    end: dict[str, Any] | None = None


def log_key(job_id: int) -> str:
    return f"{PREFIX}log:{job_id}"


def _lease_key(job_id: int) -> str:
    return f"{PREFIX}lease:{job_id}"


def _job_key(job_id: int) -> str:
    return f"{PREFIX}job:{job_id}"


# The cluster's identity: gone when Redis lost the cluster's data.
_CLUSTER = PREFIX + "cluster"


class RedisStore:
    """The cluster's keys, through one redis.asyncio client; the logs' streams are read
    through `reader` (connections of their own, with a longer timeout: connection.py)."""

    def __init__(
        self, client: redis.asyncio.Redis, reader: redis.asyncio.Redis | None = None
    ) -> None:
        def script(text: str, on: redis.asyncio.Redis = client) -> Any:
            text = text.replace("@MAX_JOB_ID@", str(lua.MAX_JOB_ID))
            return on.register_script(text.replace("@CHANGES@", CHANGES))

        self.client = client
        self._reader = client if reader is None else reader
        self._reported = _Reported()
        self._acquire = script(lua.ACQUIRE)
        self._renew_all = script(lua.RENEW_ALL)
        self._release = script(lua.RELEASE)
        self._append = JobScript(script(lua.APPEND))
        self._event = JobScript(script(lua.EVENT))
        self._save = JobScript(script(lua.SAVE))
        self._end = JobScript(script(lua.END))
        self._create = script(lua.CREATE)
        self._node = script(lua.NODE)
        self._release_node = script(lua.RELEASE_NODE)
        self._next_id = script(lua.NEXT_ID)
        self._replace_foreign = script(lua.REPLACE_FOREIGN)
        self._holders = script(lua.HOLDERS)
        self._read_bounded = script(lua.READ_BOUNDED, self._reader)

    async def aclose(self) -> None:
        """Closes the connections, the readers' too."""
        await self.client.aclose(close_connection_pool=True)
        if self._reader is not self.client:
            await self._reader.aclose(close_connection_pool=True)

    # -- the cluster and its nodes -----------------------------------------------------------
    async def cluster_id(self) -> str | None:
        """The cluster's identity; "" for a key of another type, which is none."""
        try:
            value: Any = await self.client.get(_CLUSTER)
        except ResponseError as error:
            if not is_wrong_type(error):
                raise
            return ""
        return None if value is None else value.decode()

    async def ensure_cluster_id(self) -> str:
        """The cluster's random identity, made by the first daemon that joins."""
        await self.client.set(_CLUSTER, secrets.token_hex(16), nx=True)
        found = await self.cluster_id()
        if not found:
            raise ClusterRefused(
                f"Redis holds a key of another type at {_CLUSTER}, where the cluster's "
                f"identity goes: delete it (redis-cli DEL {_CLUSTER}) if nothing else uses "
                "it, or give the cluster a database of its own"
            )
        return found

    async def hold_node(self, name: str, token: str, ms: int, known: int) -> bool:
        """Takes (or keeps) the node name; False when another daemon runs as `name`. `known`:
        the highest job id the node knows, below which the id counter never stays."""
        key = f"{PREFIX}node:{name}"
        answer = await self._node(keys=[key, _NODES, _NEXT_ID], args=[token, ms, name, known])
        if answer == 2:
            said_replaced(f"{key}, {_NODES} or {_NEXT_ID}", f" (ids go on above {known})")
        return bool(answer)

    async def release_node(self, name: str, token: str) -> None:
        await self._release_node(keys=[f"{PREFIX}node:{name}", _NODES], args=[token, name])

    async def node_count(self) -> int:
        """Nodes whose hold on their name has not ended (by Redis's clock)."""
        seconds, micros = await self.client.time()
        return int(await self.client.zcount(_NODES, seconds * 1000 + micros // 1000, "+inf"))

    # -- jobs ------------------------------------------------------------------------------------
    async def next_job_id(self, above: int) -> int:
        """A new job id, greater than `above` (the highest this node knows of)."""
        job_id, replaced = await self._next_id(keys=[_NEXT_ID], args=[above, PREFIX + "job:"])
        if replaced:
            said_replaced(_NEXT_ID, f"; ids go on from {job_id}")
        if job_id < 0:
            raise ClusterUnavailable(
                f"the cluster's job ids are used up: {_NEXT_ID} in Redis (or the highest id "
                f"this node knows, {above}) is past {lua.MAX_JOB_ID}"
            )
        return int(job_id)

    async def highest_job_id(self) -> int:
        """The highest id the cluster's counter has given (0: none, or a counter that is not
        one, as someone with write access to Redis may leave it)."""
        try:
            value: Any = await self.client.get(_NEXT_ID)
        except ResponseError as error:
            if not is_wrong_type(error):
                raise
            return 0
        return int(value) if _is_count(value) else 0

    async def create(self, job_id: int, record: dict[str, Any], node: str, ms: int) -> str | None:
        """Records a new job, its first lease held by `node`; returns the lease's token (None:
        Redis holds a job at that id already, and it is left as it is)."""
        answer: Any = await self._create(
            keys=[_job_key(job_id), JOBS, _lease_key(job_id)],
            args=[json.dumps(record), job_id, node, ms],
        )
        if answer is None:
            return None
        token, replaced = answer
        if replaced:
            await rebuild_jobs_index(self.client)
        return bytes(token).decode()

    async def job_ids(self) -> list[int]:
        """Every job id (members that are not one are left out)."""
        try:
            members: Any = await self.client.zrange(JOBS, 0, -1)
        except ResponseError as error:
            if not is_wrong_type(error):
                raise
            await replace_jobs_index(self.client, self._replace_foreign)
            members = await self.client.zrange(JOBS, 0, -1)
        return [int(member) for member in members if _is_count(member) and int(member) > 0]

    async def metas(self, job_ids: list[int]) -> dict[int, JobMeta | BadRecord]:
        """What Redis holds of these jobs (a BadRecord for one it holds wrongly); jobs it does
        not know are left out."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(_job_key(job_id), "record", "size", "first", "holder", "sealed", "cancel")
        found: dict[int, JobMeta | BadRecord] = {}
        # An answer per key, an error in place of one Redis holds as another type (whoever
        # can write to Redis can SET tailhub:job:N): that job is bad, not the whole batch.
        answers: Any = await pipe.execute(raise_on_error=False)
        for job_id, answer in zip(job_ids, answers, strict=True):
            if isinstance(answer, ResponseError):
                found[job_id] = BadRecord(f"Redis holds job {job_id}'s key wrongly: {answer}")
                continue
            record, size, first, holder, sealed, cancel = answer
            if record is None:
                continue
            try:
                data = parse_record(job_id, record)
                found[job_id] = JobMeta(
                    record=data,
                    size=_count(size),
                    first=_count(first),
                    holder=_text(holder),
                    sealed=sealed == b"1",
                    cancel=cancel == b"1",
                )
            except BadRecord as error:
                found[job_id] = error
            except (ValueError, UnicodeDecodeError) as error:
                found[job_id] = BadRecord(f"Redis holds no usable record of job {job_id}: {error}")
        return found

    async def sizes(self, job_ids: list[int]) -> dict[int, tuple[int, str, int]]:
        """The stored size, the lease holder and the first offset kept, of these jobs (those
        Redis holds wrongly are left out)."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(_job_key(job_id), "size", "holder", "first")
        answers: Any = await pipe.execute(raise_on_error=False)
        found: dict[int, tuple[int, str, int]] = {}
        for job_id, answer in zip(job_ids, answers, strict=True):
            if isinstance(answer, ResponseError):  # a key of another type: left out
                continue
            size, holder, first = answer
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                found[job_id] = (_count(size), _text(holder), _count(first))
        return found

    async def size(self, job_id: int) -> int:
        """The bytes of the job's log Redis holds (0 for a job it does not know)."""
        return await job_size(job_id, self.client.hget(_job_key(job_id), "size"))

    async def request_cancel(self, job_id: int) -> None:
        await self.client.hset(_job_key(job_id), "cancel", "1")
        await self.client.publish(CHANGES, str(job_id))

    # -- leases ----------------------------------------------------------------------------------
    async def acquire(self, job_id: int, node: str, ms: int) -> str | None:
        """The lease's token ("NODE EPOCH") if this node got it; None if someone holds it."""
        token = await self._acquire(
            keys=[_lease_key(job_id), _job_key(job_id), _CLUSTER], args=[node, ms]
        )
        return None if token is None else bytes(token).decode()

    async def renew_all(self, tokens: dict[int, str], ms: int) -> dict[int, bool] | None:
        """Renews every lease in `tokens` (job id: token) in one round trip: whether each is
        still this token's (and now renewed); None when Redis lost the cluster's data."""
        if not tokens:
            return {}
        job_ids = list(tokens)
        answer: Any = await self._renew_all(
            keys=[_CLUSTER, *(_lease_key(job_id) for job_id in job_ids)],
            args=[ms, *(tokens[job_id] for job_id in job_ids)],
        )
        if not isinstance(answer, list):
            return None  # (LOST: the cluster's key is gone)
        if len(answer) != len(job_ids):
            raise ResponseError(f"renewing {len(job_ids)} leases gave {len(answer)} answers")
        for job_id, value in zip(job_ids, answer, strict=True):
            if value == -1:
                logger.warning(
                    "job %d: its lease %s in Redis is a key of another type (planted there): "
                    "its fetch stops here",
                    job_id,
                    _lease_key(job_id),
                )
        return {job_id: value == 1 for job_id, value in zip(job_ids, answer, strict=True)}

    async def release(self, job_id: int, token: str) -> None:
        await self._release(keys=[_lease_key(job_id), _job_key(job_id)], args=[token])

    async def leases(self, job_ids: list[int], ms: int) -> dict[int, str]:
        """The lease holders' tokens of these jobs, for those that have one. A lease key no
        node wrote is replaced by one lasting `ms` that nobody holds (said once here)."""
        if not job_ids:
            return {}
        values: Any = await self._holders(
            keys=[_lease_key(job_id) for job_id in job_ids],
            args=[ms, MAX_LEASE_MS, PLACEHOLDER],
        )
        found: dict[int, str] = {}
        for job_id, answer in zip(job_ids, values, strict=True):
            value = answer
            if isinstance(answer, list):
                logger.warning(
                    "job %d: its lease key %s in Redis was none a node writes (another type, "
                    "or no expiry, or one past %d ms): replaced by a lease nobody holds, "
                    "after which the job is taken over",
                    job_id,
                    _lease_key(job_id),
                    MAX_LEASE_MS,
                )
                value = answer[0]
            if value is not None:
                found[job_id] = bytes(value).decode("utf-8", "replace")
        return found

    # -- writes under a lease ------------------------------------------------------------------
    async def append(
        self, job_id: int, token: str, expected: int, data: bytes, retention: int
    ) -> tuple[int, int]:
        """(0, new size), (STALE, 0) or (MISMATCH, the size Redis has)."""
        epoch = token.rsplit(" ", 1)[1]
        answer: Any = await self._append(
            keys=[_lease_key(job_id), log_key(job_id), _job_key(job_id), _CLUSTER],
            args=[token, expected, data, epoch, retention],
        )
        # (A size Redis holds that is no number comes back as none: Lua drops a nil.)
        return int(answer[0]), int(answer[1]) if len(answer) > 1 else -1

    async def event(self, job_id: int, token: str, message: str) -> int:
        epoch = token.rsplit(" ", 1)[1]
        return int(
            await self._event(
                keys=[_lease_key(job_id), log_key(job_id), _job_key(job_id), _CLUSTER],
                args=[token, message, epoch],
            )
        )

    async def save(self, job_id: int, token: str, record: dict[str, Any]) -> int:
        return int(
            await self._save(
                keys=[_lease_key(job_id), _job_key(job_id), _CLUSTER],
                args=[token, json.dumps(record), job_id],
            )
        )

    async def end(
        self, job_id: int, token: str, size: int, end: dict[str, Any], record: dict[str, Any]
    ) -> int:
        return int(
            await self._end(
                keys=[_lease_key(job_id), log_key(job_id), _job_key(job_id), _CLUSTER],
                args=[token, size, json.dumps(end), json.dumps(record), job_id],
            )
        )

    # -- reading logs ----------------------------------------------------------------------------
    async def read(self, after: dict[int, bytes], *, count: int) -> dict[int, list[LogEntry]]:
        """Up to `count` entries after the given ids, of several jobs in one call; an entry
        over MAX_ENTRY_BYTES is skipped without its bytes leaving Redis (lua.READ_BOUNDED).
        BrokenJobKeys for jobs whose stream is a key of another type."""
        job_ids = list(after)
        if not job_ids:
            return {}
        answer: Any = await self._read_bounded(
            keys=[log_key(job_id) for job_id in job_ids],
            args=[count, MAX_ENTRY_BYTES, *(after[job_id] for job_id in job_ids)],
        )
        broken = [
            job_id
            for job_id, entries in zip(job_ids, answer, strict=True)
            if entries and isinstance(entries[0], bytes)
        ]
        if broken:
            keys = ", ".join(log_key(job_id) for job_id in broken)
            raise BrokenJobKeys(
                f"its stream in Redis ({keys}) is a key of another type (someone replaced it): "
                "its log cannot be read from there",
                tuple(broken),
            )
        return {
            job_id: [
                _entry(job_id, entry_id, _pairs(fields), self._reported)
                for entry_id, fields in entries
            ]
            for job_id, entries in zip(job_ids, answer, strict=True)
            if entries
        }

    async def wait_for_entries(self, after: dict[int, bytes], *, block_ms: int) -> None:
        """Returns once one of these streams has an entry after its id, or after `block_ms`.
        What it sees is read again by `read`: XREAD cannot leave an entry's bytes in Redis."""
        if after:
            streams = {log_key(job_id): entry_id for job_id, entry_id in after.items()}
            await read_streams(self._reader, streams, count=1, block=block_ms)

    async def read_range(self, job_id: int, after: bytes, count: int) -> list[LogEntry]:
        return (await self.read({job_id: after}, count=count)).get(job_id, [])


class _Reported:
    """The bad entries already reported (job id, entry id): a node reading a stream again
    (each take-over round tries to catch up) says each one once. Bounded, oldest forgotten."""

    def __init__(self, most: int = 4096) -> None:
        self._seen: collections.OrderedDict[tuple[int, bytes], None] = collections.OrderedDict()
        self._most = most

    def first_time(self, key: tuple[int, bytes]) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._most:
            self._seen.popitem(last=False)
        return True


def _pairs(fields: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's fields, as Redis lists them (name, value, name, value...)."""
    return dict(zip(fields[::2], fields[1::2], strict=False))


def _entry(
    job_id: int, entry_id: bytes, fields: dict[bytes, bytes], reported: _Reported
) -> LogEntry:
    """One stream entry, checked: an entry that is not what a holder writes (bytes that do
    not end at their id, an end that is not an object, anything over the size bounds) is
    reported once and becomes an empty entry, skipped (only its id is kept, to read on after
    it)."""
    try:
        offset_text, sequence = entry_id.split(b"-", 1)
        offset = _count(offset_text)
        if b"x" in fields:  # (too large to be read: lua.READ_BOUNDED)
            raise ValueError(f"it holds {_count(fields[b'x'])} bytes, over {MAX_ENTRY_BYTES}")
        if b"d" in fields:
            data, start = fields[b"d"], _count(fields.get(b"o"))
            if start + len(data) != offset or sequence != b"0" or len(data) > MAX_ENTRY_BYTES:
                raise ValueError("its bytes do not end where its id says")
            return LogEntry(entry_id, start, data=data)
        if b"end" in fields:
            end = json.loads(fields[b"end"])
            if not isinstance(end, dict):
                raise ValueError("its end is not a JSON object")
            return LogEntry(entry_id, offset, end=end)
        if b"v" not in fields:
            raise ValueError("it holds no bytes, event or end")
        message = fields[b"v"][:MAX_EVENT_BYTES].decode("utf-8", "replace")
        return LogEntry(entry_id, offset, event=message)
    except (ValueError, UnicodeDecodeError) as error:
        if reported.first_time((job_id, entry_id)):
            logger.warning(
                "cluster: job %d: skipped stream entry %r: %s", job_id, entry_id[:40], error
            )
        return LogEntry(entry_id, -1)


def _is_count(value: object) -> bool:
    return isinstance(value, bytes) and value.isdigit() and len(value) < 20


def _count(value: object) -> int:
    """A size or offset Redis holds: digits only (None: 0); ValueError for anything else."""
    if value is None:
        return 0
    if not isinstance(value, bytes) or not _is_count(value):
        raise ValueError(f"{value!r:.40} is not a byte count")
    return int(value)


def _text(value: object) -> str:
    return value[:256].decode() if isinstance(value, bytes) else ""
