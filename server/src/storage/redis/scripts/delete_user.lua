-- Deletes a user and its name; returns 1 if there was one.
-- KEYS: users, user names
-- ARGV: name
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
