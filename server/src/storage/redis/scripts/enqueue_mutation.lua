-- Queues a device mutation unless its id is known (finished or queued), atomically.
-- Returns {'done', stored outcome}, {'pending', position}, {'full', pending} or
-- {'queued', position}.
-- KEYS: results, ids, queue, values
-- ARGV: mutation id, most pending, encoded mutation
local done = redis.call('HGET', KEYS[1], ARGV[1])
if done then
  return {'done', done}
end
local queued = redis.call('HGET', KEYS[2], ARGV[1])
if queued then
  return {'pending', queued}
end
local pending = redis.call('ZCARD', KEYS[3])
if pending >= tonumber(ARGV[2]) then
  return {'full', string.format('%d', pending)}
end
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
local position = 1
if last[2] then
  position = tonumber(last[2]) + 1
end
position = string.format('%d', position)
redis.call('ZADD', KEYS[3], position, position)
redis.call('HSET', KEYS[4], position, ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], position)
return {'queued', position}
