-- Retention by idleness (after ids.lua): a thread whose newest event is archived (at or
-- below ARGV[1]) and that has had no event since leaves Redis but for its participants'
-- index entries, which keep its newest id (a new stream continues above it).
-- KEYS: 1 thread stream, 2 thread state. Returns 1 when removed, 0 when it was not idle.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 1 and newer(last[1][1], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
