-- Inserts or replaces a device and its indexes, if its owner is still the one read
-- (compare-and-set); returns 1, or 0 when it changed meanwhile.
-- KEYS: devices, owners, ids, the new user's devices, the previous user's devices
-- ARGV: client id, encoded device, user id, '1' if it had an owner, that owner
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if ARGV[4] == '1' then
  if owner ~= ARGV[5] then
    return 0
  end
elseif owner then
  return 0
end
if owner and owner ~= ARGV[3] then
  redis.call('ZREM', KEYS[5], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
return 1
