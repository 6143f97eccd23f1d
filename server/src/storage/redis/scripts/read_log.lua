-- Reads a partition's state and up to a count of log entries after a sequence, no later
-- than a bound ('' for the head read here), in one consistent view.
-- KEYS: state, log
-- ARGV: after, bound, count
local state = redis.call('HMGET', KEYS[1], 'head', 'horizon', 'total', 'checksum')
local bound = ARGV[2]
if bound == '' then
  bound = state[1] or '0'
end
local entries = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], bound, 'LIMIT', 0, tonumber(ARGV[3]))
return {state, entries}
