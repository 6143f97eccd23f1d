-- Stores a mutation's outcome and takes it off its device's queue, atomically.
-- KEYS: results, ids, queue, values
-- ARGV: mutation id, stored outcome
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local position = redis.call('HGET', KEYS[2], ARGV[1])
if position then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], position)
  redis.call('HDEL', KEYS[4], position)
end
return 1
