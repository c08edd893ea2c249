-- Retention by idleness (after ids.lua): a thread whose newest event is archived (at or
-- below ARGV[1]) and that has had no event since leaves Redis but for its participants'
-- index entries, which keep its newest id (a new stream continues above it), and but for
-- its blocks (BLOCKED, UNBLOCKED fields): a block must hold whenever the thread wakes up.
-- KEYS: 1 thread stream, 2 thread state. Returns 1 when removed, 0 when it was not idle.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 1 and newer(last[1][1], ARGV[1]) then return 0 end
local keep = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(name, 1, #BLOCKED) == BLOCKED or string.sub(name, 1, #UNBLOCKED) == UNBLOCKED then
    keep[#keep + 1] = name
    keep[#keep + 1] = redis.call('HGET', KEYS[2], name)
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
if #keep > 0 then redis.call('HSET', KEYS[2], unpack(keep)) end
return 1
