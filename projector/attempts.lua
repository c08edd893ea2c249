-- A projector process is about to commit its first batch of a partition log, starting
-- right after log id ARGV[1] and ending at ARGV[2]. Count how many processes started
-- there (each earlier one died before committing: a crash loop), and answer how to go on:
--   {'batch'}         as usual;
--   {'single', end}   commit one entry at a time up to log id `end` (processes died on
--                     the whole batch: find the entry that kills them);
--   {'bury', end}     processes died on the first entry alone: bury it, go on singly.
-- KEYS: 1 the partition's attempts hash (at, n, narrow). ARGV: 1 position, 2 batch end,
-- 3 how many deaths are tolerated at one position. (After adapters/ids.lua.)
local key, position, last, tolerated = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local n
if redis.call('HGET', key, 'at') == position then
  n = redis.call('HINCRBY', key, 'n', 1)
else
  redis.call('HSET', key, 'at', position, 'n', 1)
  n = 1
end
local narrow = redis.call('HGET', key, 'narrow')
if narrow and not newer(narrow, position) then  -- stepped past the stretch
  redis.call('HDEL', key, 'narrow')
  narrow = false
end
if not narrow then
  if n <= tolerated then return {'batch', ''} end
  redis.call('HSET', key, 'narrow', last, 'n', 1)
  return {'single', last}
end
if n <= tolerated then return {'single', narrow} end
return {'bury', narrow}
