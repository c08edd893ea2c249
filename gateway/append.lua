-- Append one event to a thread, atomically, or answer why not (after the record prelude,
-- ids.lua and fence.lua; the names in capitals are adapters/record.py's).
-- KEYS: 1 partition epoch, 2 thread stream, 3 partition log, 4 dedupe key, 5 thread state,
--       6 index of participant a, 7 index of participant b
-- ARGV: 1 payload (JSON event), 2 thread, 3 dedupe ttl (s), 4 channel a, 5 channel b,
--       6 guard ('' | 'absent' | 'after'), 7 guard field, 8 guard value,
--       9.. pairs of (state field, value) to set; value NEW_ID means the new event id
-- Returns {OK, id} appended, {DUPLICATE, id} of an earlier command, {GUARD_FAILED}
-- ({FENCED}: see fence.lua).

local prior = redis.call('GET', KEYS[4])
if prior then
  return {DUPLICATE, prior}
end

local guard = ARGV[6]
if guard == 'absent' then
  if redis.call('HEXISTS', KEYS[5], ARGV[7]) == 1 then return {GUARD_FAILED} end
elseif guard == 'after' then
  local current = redis.call('HGET', KEYS[5], ARGV[7])
  if current and not newer(ARGV[8], current) then return {GUARD_FAILED} end
end

-- A thread whose stream retention removed still has its newest id in the index: the
-- new stream continues above it, and says that older events are in the archive.
local next_id = '*'
local floor = false
if redis.call('EXISTS', KEYS[2]) == 0 then
  floor = redis.call('HGET', KEYS[6], ARGV[2])
  if floor then
    local now = redis.call('TIME')
    local fms = string.match(floor, '^(%d+)-')
    if tonumber(fms) >= tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) then
      next_id = successor(floor)
    end
  end
end

local id = redis.call('XADD', KEYS[2], next_id, EVENT, ARGV[1])
if floor then redis.call('HSET', KEYS[5], ARCHIVED_BELOW, id) end
redis.call('XADD', KEYS[3], '*', LOG_THREAD, ARGV[2], LOG_ID, id, LOG_EVENT, ARGV[1])
redis.call('SET', KEYS[4], id, 'EX', ARGV[3])
for i = 9, #ARGV, 2 do
  local value = ARGV[i + 1]
  if value == NEW_ID then value = id end
  redis.call('HSET', KEYS[5], ARGV[i], value)
end
redis.call('HSET', KEYS[6], ARGV[2], id)
if KEYS[7] ~= KEYS[6] then redis.call('HSET', KEYS[7], ARGV[2], id) end

local ms = string.match(id, '^(%d+)')
local frame = '{"type":"event","thread":"' .. ARGV[2] .. '","id":"' .. id .. '","ts":' .. ms
  .. ',"event":' .. ARGV[1] .. '}'
local message = ARGV[2] .. ' ' .. id .. ' ' .. frame
redis.call('PUBLISH', ARGV[4], message)
if ARGV[5] ~= ARGV[4] then redis.call('PUBLISH', ARGV[5], message) end
return {OK, id}
