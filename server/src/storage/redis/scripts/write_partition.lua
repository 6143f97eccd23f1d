-- Applies one partition batch computed by the store, if the partition's head is still the
-- one the batch was computed from (compare-and-set); returns 1, or 0 when another writer
-- moved the head first (the store then reads again and recomputes). A batch written under a
-- cluster lease names the state field that keeps the greatest fencing token written under
-- that lease, and its token: a token below it is a holder that lost the lease, refused with -1.
-- KEYS: state, records, ids, log
-- ARGV: expected head, new head, new total, new checksum, deletes, sets, log entries,
--       fence field ('' for none), fence token,
--       then the deleted ids, then (id, value) per set record, then (seq, member) per log entry
if ARGV[8] ~= '' then
  local seen = tonumber(redis.call('HGET', KEYS[1], ARGV[8]) or '0')
  if seen > tonumber(ARGV[9]) then
    return -1
  end
end
local head = redis.call('HGET', KEYS[1], 'head') or '0'
if head ~= ARGV[1] then
  return 0
end
local deletes, sets, entries = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local at = 10
for _ = 1, deletes do
  redis.call('HDEL', KEYS[2], ARGV[at])
  redis.call('ZREM', KEYS[3], ARGV[at])
  at = at + 1
end
for _ = 1, sets do
  redis.call('HSET', KEYS[2], ARGV[at], ARGV[at + 1])
  redis.call('ZADD', KEYS[3], 0, ARGV[at])
  at = at + 2
end
for _ = 1, entries do
  redis.call('ZADD', KEYS[4], ARGV[at], ARGV[at + 1])
  at = at + 2
end
redis.call('HSET', KEYS[1], 'head', ARGV[2], 'total', ARGV[3], 'checksum', ARGV[4])
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[8], ARGV[9])
end
return 1
