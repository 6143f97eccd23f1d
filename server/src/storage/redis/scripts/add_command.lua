-- Stores a device command at a queue position, applies its effect to the device and drops
-- trimmed acknowledged commands, if the device and the position are still as read
-- (compare-and-set); returns 1, or 0 when either changed meanwhile.
-- KEYS: devices, the device's commands
-- ARGV: client id, device as read, '1' if the device changes, the new device, position,
--       encoded command, then the positions to drop
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
if redis.call('HEXISTS', KEYS[2], ARGV[5]) == 1 then
  return 0
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
for at = 7, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[at])
end
return 1
