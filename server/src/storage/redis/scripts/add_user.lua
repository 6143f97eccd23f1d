-- Adds a user unless the name is taken; returns 1 if added.
-- KEYS: users, user names
-- ARGV: name, encoded user
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
