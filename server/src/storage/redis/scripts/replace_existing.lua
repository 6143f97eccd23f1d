-- Replaces a hash field only if it exists; returns 1 if replaced.
-- KEYS: hash
-- ARGV: field, value
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
