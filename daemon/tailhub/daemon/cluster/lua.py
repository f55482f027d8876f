"""The Lua scripts a cluster node runs in Redis (cluster/redis_store.py), each one atomic step.

Every write that needs the lease checks it first, in the same script, so a daemon that lost its
lease (paused, partitioned, or just slow) can never write. A key of another type under a job's
name (planted by whoever can write to Redis) is that job's fault: where a script reads one it
uses `redis.pcall`, so that the error answers for that job, never fails the script for every
job (a node renewing all its leases in one script said its Redis was unreachable and stopped
every fetch).

`@CHANGES@` in a script stands for the pub/sub channel of changed records (redis_store.CHANGES).
"""

from __future__ import annotations

# An append (and an event, a record, an end) is refused with this when the lease is gone.
STALE = -1
# ... and with this when the log's size is not the one the appender expected.
MISMATCH = -2
# ... and with this when Redis no longer holds the cluster's data at all (it restarted
# empty, or was flushed): told apart from a lease taken over, which a follower would
# otherwise be told.
LOST = -3

# KEYS: lease, job, cluster.
ACQUIRE = """
if redis.call('EXISTS', KEYS[3]) == 0 then return false end
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local sealed = redis.pcall('HGET', KEYS[2], 'sealed')
if type(sealed) == 'table' or sealed == '1' then return false end
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
local token = ARGV[1] .. ' ' .. epoch
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'holder', ARGV[1])
return token
"""

# KEYS: cluster, then one lease per job; ARGV: ms, then one token per lease. Every lease a
# node holds, renewed in one round trip: -3 (LOST) for all, or 1 (renewed) / 0 (no longer
# this token's) / -1 (not a lease: a key of another type) per lease, in order.
RENEW_ALL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -3 end
local renewed = {}
for i = 2, #KEYS do
  local held = redis.pcall('GET', KEYS[i])
  if held == ARGV[i] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    renewed[i - 1] = 1
  elseif type(held) == 'table' then
    renewed[i - 1] = -1
  else
    renewed[i - 1] = 0
  end
end
return renewed
"""

RELEASE = """
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.pcall('HSET', KEYS[2], 'holder', '')
return 1
"""

# KEYS: lease, log, job, cluster; ARGV: token, expected size, bytes, epoch, retention (0:
# none).
APPEND = """
if redis.call('EXISTS', KEYS[4]) == 0 then return {-3, 0} end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0} end
local size = tonumber(redis.call('HGET', KEYS[3], 'size') or '0')
if size ~= tonumber(ARGV[2]) then return {-2, size} end
local new = size + string.len(ARGV[3])
redis.call('XADD', KEYS[2], new .. '-0', 'o', size, 'd', ARGV[3], 'e', ARGV[4])
redis.call('HSET', KEYS[3], 'size', new)
local cap = tonumber(ARGV[5])
if cap > 0 then
  local first = tonumber(redis.call('HGET', KEYS[3], 'first') or '0')
  if new - first > cap then
    redis.call('XTRIM', KEYS[2], 'MINID', (new - cap + 1) .. '-0')
    local kept = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
    if kept[1] then
      local fields = kept[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == 'o' then redis.call('HSET', KEYS[3], 'first', fields[i + 1]) end
      end
    end
  end
end
return {0, new}
"""

# KEYS: lease, log, job, cluster; ARGV: token, message, epoch.
EVENT = """
if redis.call('EXISTS', KEYS[4]) == 0 then return -3 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local size = redis.call('HGET', KEYS[3], 'size') or '0'
redis.call('XADD', KEYS[2], size .. '-*', 'v', ARGV[2], 'e', ARGV[3])
return 0
"""

# KEYS: lease, job, cluster; ARGV: token ('' for a job nobody fetches), record, job id.
SAVE = """
if redis.call('EXISTS', KEYS[3]) == 0 then return -3 end
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[2], 'record', ARGV[2])
redis.call('PUBLISH', '@CHANGES@', ARGV[3])
return 0
"""

# KEYS: lease, log, job, cluster; ARGV: token, expected size, end (JSON), record, job id. The
# record is sealed even if the stream refuses the end (a planted key: BrokenJobKeys).
END = """
if redis.call('EXISTS', KEYS[4]) == 0 then return -3 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local size = tonumber(redis.call('HGET', KEYS[3], 'size') or '0')
if size ~= tonumber(ARGV[2]) then return -2 end
redis.pcall('XADD', KEYS[2], size .. '-*', 'end', ARGV[3])
redis.call('HSET', KEYS[3], 'record', ARGV[4], 'sealed', '1', 'holder', '')
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', '@CHANGES@', ARGV[5])
return 0
"""

# KEYS: job, jobs, lease; ARGV: record, job id, node, lease ms. The creator holds the first
# lease from the start: no other node can take the new job before it does. Answers {token,
# 1 if `jobs` was a key of another type, replaced (redis_store rebuilds it)}; or false when the
# job's key exists already (an id given twice: never written over).
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local replaced = 0
local kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'zset' and kind ~= 'none' then
  redis.call('DEL', KEYS[2])
  replaced = 1
end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'size', 0, 'first', 0, 'epoch', 1,
           'holder', ARGV[3])
local token = ARGV[3] .. ' 1'
redis.call('SET', KEYS[3], token, 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[2])
redis.call('PUBLISH', '@CHANGES@', ARGV[2])
return {token, replaced}
"""

# Job ids a cluster gives stay at most this (15 digits). Lua's numbers are doubles, exact only
# below 2**53: a counter planted past that gave one id again and again, written back as 1e+18.
MAX_JOB_ID = 999_999_999_999_999

# The id counter's value when it is one (a string of at most 15 digits), else nil: somebody
# replaced it with a key of another type, a string of something else, or a count past ours.
_COUNT = """
local function count(key)
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'string' then return nil end
  local held = redis.call('GET', key)
  if string.len(held) <= 15 and string.match(held, '^%d+$') then return tonumber(held) end
  return nil
end
"""

# KEYS: next id; ARGV: the highest id the node knows, the prefix of a job's key. Never an id
# given before, even by a Redis restored from an older copy (its counter went back; the nodes'
# records did not), nor one whose record Redis holds already (planted: skipped, up to 1000). A
# counter that is no count is replaced, counting on from that floor. Answers {id, 1 if it was
# replaced}; the id is -1 past MAX_JOB_ID. Written back as digits (Lua would write 1e+18).
NEXT_ID = (
    _COUNT
    + """
local replaced = 0
if redis.call('EXISTS', KEYS[1]) == 1 and not count(KEYS[1]) then
  redis.call('DEL', KEYS[1])
  replaced = 1
end
local id = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if id <= floor then id = floor + 1 end
local skipped = 0
while skipped < 1000 and redis.call('EXISTS', ARGV[2] .. string.format('%d', id)) == 1 do
  id, skipped = id + 1, skipped + 1
end
if id > @MAX_JOB_ID@ then return {-1, replaced} end
redis.call('SET', KEYS[1], string.format('%d', id))
return {id, replaced}
"""
)

# KEYS: node, nodes; ARGV: token, name.
RELEASE_NODE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 0
"""

# KEYS: node, nodes, next id; ARGV: token, ms, name, the highest id the node knows. Takes
# the node name, or keeps it for the daemon holding it; `nodes` scores each name by when its
# hold ends (Redis's clock), for counting. Either key found of another type is replaced, and
# so is an id counter that is no count (answers 2 then, else 1; 0 when another daemon holds the
# name). The counter is raised to the highest id the node knows: records above it are taken
# for forgeries (cluster/sync.py), and it held none of them.
NODE = (
    _COUNT
    + """
local replaced = false
local holder = redis.pcall('GET', KEYS[1])
if type(holder) == 'table' then
  redis.call('DEL', KEYS[1])
  holder, replaced = false, true
end
if holder and holder ~= ARGV[1] then return 0 end
local kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'zset' and kind ~= 'none' then
  redis.call('DEL', KEYS[2])
  replaced = true
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], ms + tonumber(ARGV[2]), ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms)
local known = tonumber(ARGV[4])
local counted = count(KEYS[3])
if redis.call('EXISTS', KEYS[3]) == 1 and not counted then replaced = true end
if known > 0 and (counted or 0) < known then redis.call('SET', KEYS[3], ARGV[4]) end
if replaced then return 2 end
return 1
"""
)

# KEYS: a key the cluster owns; ARGV: its type. Deletes it when it is of another type: 1 then.
REPLACE_FOREIGN = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == ARGV[1] or kind == 'none' then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: one lease per job; ARGV: lease ms, the longest lease a node takes, a placeholder token.
# The holders' tokens (false: none). A key no node wrote (of another type; with no expiry, or
# one past the longest lease a node takes) would keep its job from ever being taken over: it
# is replaced by a placeholder lease nobody renews, answered as {placeholder}. The job is taken
# over once that ends, as after a holder that died: never while its holder may still run it.
HOLDERS = """
local found = {}
for i = 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind == 'none' then
    found[i] = false
  else
    local ttl = redis.call('PTTL', KEYS[i])
    if kind ~= 'string' or ttl < 0 or ttl > tonumber(ARGV[2]) then
      redis.call('SET', KEYS[i], ARGV[3], 'PX', ARGV[1])
      found[i] = {ARGV[3]}
    else
      found[i] = redis.call('GET', KEYS[i])
    end
  end
end
return found
"""

# KEYS: streams; ARGV: count, the most bytes an entry may hold, then one id per stream (read
# after it). Entries of each stream, as XRANGE gives them, but an entry holding more than
# the bound (field names and values together: a 60 MiB name passed a check of the values)
# comes back as {id, {'x', its size}}: its bytes never cross the network (60 MiB planted in
# one entry made every node's read time out, and the node say Redis was unreachable). A key
# of another type comes back as {'wrongtype'}.
READ_BOUNDED = """
local count, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local found = {}
for i, key in ipairs(KEYS) do
  local entries = redis.pcall('XRANGE', key, '(' .. ARGV[i + 2], '+', 'COUNT', count)
  if entries['err'] then
    found[i] = {'wrongtype'}
  else
    for _, entry in ipairs(entries) do
      local size = 0
      for j = 1, #entry[2] do size = size + #entry[2][j] end
      if size > most then entry[2] = {'x', tostring(size)} end
    end
    found[i] = entries
  end
end
return found
"""
