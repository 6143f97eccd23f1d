-- One compaction step: raises the horizon to the compaction point (never lowers it) and
-- removes log entries the store found superseded (a superseded entry stays superseded, so
-- this needs no compare-and-set). Returns {entries removed, horizon}.
-- KEYS: state, log
-- ARGV: point, then the log members to remove
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0}
end
local horizon = tonumber(redis.call('HGET', KEYS[1], 'horizon') or '0')
local point = tonumber(ARGV[1])
if point > horizon then
  horizon = point
  redis.call('HSET', KEYS[1], 'horizon', ARGV[1])
end
local removed = 0
for at = 2, #ARGV do
  removed = removed + redis.call('ZREM', KEYS[2], ARGV[at])
end
return {removed, horizon}
