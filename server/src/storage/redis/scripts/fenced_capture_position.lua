-- Stores a capture position, unless it is written under a cluster lease whose holder is no
-- longer the one given (expired, or granted to another node since): then returns 0.
-- KEYS: capture positions, lease holder (the positions' key again when unfenced)
-- ARGV: position name, position token, expected holder ('' when unfenced)
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
