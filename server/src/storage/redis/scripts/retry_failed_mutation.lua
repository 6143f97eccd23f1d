-- Puts a failed mutation back at the end of its device's queue, forgetting its outcome and
-- its failed entry, atomically. Returns {position, stored mutation}, or false when no such
-- failed mutation is kept.
-- KEYS: results, ids, queue, values, failed
-- ARGV: mutation id
local failed = redis.call('HGET', KEYS[5], ARGV[1])
if not failed then
  return false
end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
-- The stored failed entry is its failure time (8 bytes) then the mutation.
local value = string.sub(failed, 9)
local queued = redis.call('HGET', KEYS[2], ARGV[1])
if queued then
  return {queued, value}
end
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
local position = 1
if last[2] then
  position = tonumber(last[2]) + 1
end
position = string.format('%d', position)
redis.call('ZADD', KEYS[3], position, position)
redis.call('HSET', KEYS[4], position, value)
redis.call('HSET', KEYS[2], ARGV[1], position)
return {position, value}
