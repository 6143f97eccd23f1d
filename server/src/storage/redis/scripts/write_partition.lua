-- Applies one partition batch computed by the store, if the partition's head is still the
-- one the batch was computed from (compare-and-set); returns 1, or 0 when another writer
-- moved the head first (the store then reads again and recomputes).
-- KEYS: state, records, ids, log
-- ARGV: expected head, new head, new total, new checksum, deletes, sets, log entries,
--       then the deleted ids, then (id, value) per set record, then (seq, member) per log entry
local head = redis.call('HGET', KEYS[1], 'head') or '0'
if head ~= ARGV[1] then
  return 0
end
local deletes, sets, entries = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local at = 8
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
return 1
