-- Append one event to a thread, atomically, or answer why not.
-- KEYS: 1 thread stream, 2 partition log, 3 dedupe key, 4 thread state,
--       5 index of participant a, 6 index of participant b
-- ARGV: 1 payload (JSON event), 2 thread, 3 dedupe ttl (s), 4 channel a, 5 channel b,
--       6 guard ('' | 'absent' | 'after'), 7 guard field, 8 guard value,
--       9.. pairs of (state field, value) to set; value '$id' means the new event id
-- Returns {id, 0} appended, {id, 1} duplicate of an earlier command, {'', 2} guard failed.

local prior = redis.call('GET', KEYS[3])
if prior then
  return {prior, 1}
end

local function newer(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if #ams ~= #bms then return #ams > #bms end
  if ams ~= bms then return ams > bms end
  return tonumber(aseq) > tonumber(bseq)
end

local guard = ARGV[6]
if guard == 'absent' then
  if redis.call('HEXISTS', KEYS[4], ARGV[7]) == 1 then return {'', 2} end
elseif guard == 'after' then
  local current = redis.call('HGET', KEYS[4], ARGV[7])
  if current and not newer(ARGV[8], current) then return {'', 2} end
end

local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
redis.call('XADD', KEYS[2], '*', 't', ARGV[2], 'i', id, 'e', ARGV[1])
redis.call('SET', KEYS[3], id, 'EX', ARGV[3])
for i = 9, #ARGV, 2 do
  local value = ARGV[i + 1]
  if value == '$id' then value = id end
  redis.call('HSET', KEYS[4], ARGV[i], value)
end
redis.call('HSET', KEYS[5], ARGV[2], id)
if KEYS[6] ~= KEYS[5] then redis.call('HSET', KEYS[6], ARGV[2], id) end

local ms = string.match(id, '^(%d+)')
local frame = '{"type":"event","thread":"' .. ARGV[2] .. '","id":"' .. id .. '","ts":' .. ms
  .. ',"event":' .. ARGV[1] .. '}'
local message = ARGV[2] .. ' ' .. id .. ' ' .. frame
redis.call('PUBLISH', ARGV[4], message)
if ARGV[5] ~= ARGV[4] then redis.call('PUBLISH', ARGV[5], message) end
return {id, 0}
