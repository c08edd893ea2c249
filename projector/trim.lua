-- Retention by count (after ids.lua): a thread stream keeps its newest ARGV[1] events and
-- every event above ARGV[2], the thread's newest archived id. At most ARGV[3] entries go
-- per call. A MessageDeleted leaving Redis takes the target's deleted marker with it (the
-- target, older, has left too; the projection has it deleted). A MessageSent leaving takes
-- its participants' reaction fields with it once their last change is archived (the
-- projection's reactions rows hold them then). ARCHIVED_BELOW moves up with the cut.
-- KEYS: 1 thread stream, 2 thread state. ARGV: 1 events to keep, 2 newest archived id,
-- 3 entries per call, 4 and 5 the thread's participants. Returns how many entries left.
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return 0 end
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, tonumber(ARGV[3])))
local cut, removed = false, 0
for _, entry in ipairs(oldest) do
  if newer(entry[1], ARGV[2]) then break end
  cut, removed = entry[1], removed + 1
  local payload = entry[2][2]
  if string.find(payload, '{"kind":"MessageSent"', 1, true) == 1 then
    for user = 4, 5 do
      local field = REACTIONS .. entry[1] .. ':' .. ARGV[user]
      local value = redis.call('HGET', KEYS[2], field)
      if value then
        local changed = string.match(value, '^[^\n]*')
        if not newer(changed, ARGV[2]) then redis.call('HDEL', KEYS[2], field) end
      end
    end
  elseif string.find(payload, '{"kind":"MessageDeleted"', 1, true) == 1 then
    local target = string.match(payload, '"target":"(%d+%-%d+)"')
    if target then redis.call('HDEL', KEYS[2], DELETED .. target) end
  end
end
if not cut then return 0 end
local lo = successor(cut)
redis.call('XTRIM', KEYS[1], 'MINID', lo)
redis.call('HSET', KEYS[2], ARCHIVED_BELOW, lo)
return removed
