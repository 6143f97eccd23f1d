-- Stores a mutation's outcome and takes it off its device's queue, atomically; keeps the
-- mutation as failed when its channel refused it (ARGV[3] not empty), else forgets any
-- failed entry of its id. An outcome decided under a lane's cluster lease is refused (0)
-- when that lease's holder is no longer the one given.
-- KEYS: results, ids, queue, values, failed, lane lease holder (results again when unfenced)
-- ARGV: mutation id, stored outcome, stored failed mutation or '', expected holder or ''
if ARGV[4] ~= '' and redis.call('GET', KEYS[6]) ~= ARGV[4] then
  return 0
end
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
