-- Sets fields of one hash if each still holds the value read (compare-and-set); all or
-- nothing. Returns 1, or 0 when one changed meanwhile.
-- KEYS: hash
-- ARGV: per field: field, '1' if it was present, the value read, the new value
for at = 1, #ARGV, 4 do
  local current = redis.call('HGET', KEYS[1], ARGV[at])
  if ARGV[at + 1] == '1' then
    if current ~= ARGV[at + 2] then
      return 0
    end
  elseif current then
    return 0
  end
end
for at = 1, #ARGV, 4 do
  redis.call('HSET', KEYS[1], ARGV[at], ARGV[at + 3])
end
return 1
