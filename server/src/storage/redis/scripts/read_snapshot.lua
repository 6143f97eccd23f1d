-- Reads a partition's state and up to a count of live records with ids after a given one
-- (by byte order), in one consistent view.
-- KEYS: state, ids, records
-- ARGV: '1' if an id to start after is given, that id, count
local state = redis.call('HMGET', KEYS[1], 'head', 'horizon', 'total', 'checksum')
local min = '-'
if ARGV[1] == '1' then
  min = '(' .. ARGV[2]
end
local ids = redis.call('ZRANGEBYLEX', KEYS[2], min, '+', 'LIMIT', 0, tonumber(ARGV[3]))
local values = {}
if #ids > 0 then
  values = redis.call('HMGET', KEYS[3], unpack(ids))
end
return {state, ids, values}
