-- Stores a mutation's outcome and takes it off its device's queue, atomically; keeps the
-- mutation as failed when its channel refused it (ARGV[3] not empty), else forgets any
-- failed entry of its id.
-- KEYS: results, ids, queue, values, failed
-- ARGV: mutation id, stored outcome, stored failed mutation or ''
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local position = redis.call('HGET', KEYS[2], ARGV[1])
if position then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], position)
  redis.call('HDEL', KEYS[4], position)
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
else
  redis.call('HDEL', KEYS[5], ARGV[1])
end
return 1
