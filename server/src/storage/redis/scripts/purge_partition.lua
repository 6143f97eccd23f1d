-- Deletes a partition's keys; returns 1 if it had a state (had been written).
-- KEYS: state, records, ids, log
local existed = redis.call('EXISTS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return existed
