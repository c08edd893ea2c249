-- Append one event to a thread, atomically, or answer why not (after the record prelude,
-- ids.lua, fence.lua and budget.lua; the names in capitals are adapters/record.py's).
-- KEYS: 1 partition epoch, 2 thread stream, 3 partition log, 4 dedupe key, 5 thread state,
--       6 index of participant a, 7 index of participant b, 8 the sender's budget
-- ARGV: 1 payload (JSON event), 2 thread, 3 dedupe ttl (s), 4 channel a, 5 channel b,
--       6 the budget: 'rate burst byte_rate byte_burst cost' (per second; a rate of 0 turns
--       that bucket off; cost: the body's UTF-8 bytes), 7 n, then n checks (kind, state
--       field, value), then pairs of (state field, value) to set ('' deletes the field;
--       NEW_ID inside a value becomes the new event id).
-- Checks: 'absent' the field is not set; 'after' value is newer than the field's;
--       'equals' the field holds value ('' = not set); 'open' the field (the other
--       participant's block) is not set, else BLOCKED_STATUS; 'sent' value is the id of a
--       MessageSent of the thread, else MISSING, or ARCHIVED when only the archive can say.
-- Budget: two token buckets per user (commands, body bytes), refilled by Redis TIME; a
--       duplicate costs nothing, a command to decide again (GUARD_FAILED, ARCHIVED) is
--       charged only when it is decided; BLOCKED and MISSING refusals are charged.
-- Returns {OK, id} appended, {DUPLICATE, id} of an earlier command, {GUARD_FAILED} (decide
-- again), {BLOCKED_STATUS}, {MISSING}, {ARCHIVED}, {RATE_LIMITED, wait ms} ({FENCED}: see
-- fence.lua).

local prior = redis.call('GET', KEYS[4])
if prior then
  -- rewritten unchanged: a write that replicates, so a WAIT after this script
  -- (DUOLOGUE_ACK_REPLICAS) covers the recorded event too
  redis.call('SET', KEYS[4], prior, 'KEEPTTL')
  return {DUPLICATE, prior}
end

local wait, budget = budget_take(KEYS[8], ARGV[6])
if wait > 0 then return {RATE_LIMITED, wait} end

local function charge()
  if budget then budget_charge(KEYS[8], budget) end
end

local function archived_only(target)
  if redis.call('EXISTS', KEYS[2]) == 0 then
    return redis.call('HEXISTS', KEYS[6], ARGV[2]) == 1
  end
  local lo = redis.call('HGET', KEYS[5], ARCHIVED_BELOW)
  return lo and newer(lo, target)
end

local checks = tonumber(ARGV[7])
for i = 8, 7 + 3 * checks, 3 do
  local kind, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if kind == 'absent' then
    if redis.call('HEXISTS', KEYS[5], field) == 1 then return {GUARD_FAILED} end
  elseif kind == 'after' then
    local current = redis.call('HGET', KEYS[5], field)
    if current and not newer(value, current) then return {GUARD_FAILED} end
  elseif kind == 'equals' then
    if (redis.call('HGET', KEYS[5], field) or '') ~= value then return {GUARD_FAILED} end
  elseif kind == 'open' then
    if redis.call('HEXISTS', KEYS[5], field) == 1 then charge(); return {BLOCKED_STATUS} end
  elseif kind == 'sent' then
    local found = redis.call('XRANGE', KEYS[2], value, value)
    if #found == 1 then
      if string.find(found[1][2][2], '{"kind":"MessageSent"', 1, true) ~= 1 then
        charge()
        return {MISSING}
      end
    elseif archived_only(value) then
      return {ARCHIVED}
    else
      charge()
      return {MISSING}
    end
  end
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

charge()
local id = redis.call('XADD', KEYS[2], next_id, EVENT, ARGV[1])
if floor then redis.call('HSET', KEYS[5], ARCHIVED_BELOW, id) end
redis.call('XADD', KEYS[3], '*', LOG_THREAD, ARGV[2], LOG_ID, id, LOG_EVENT, ARGV[1])
redis.call('SET', KEYS[4], id, 'EX', ARGV[3])
for i = 8 + 3 * checks, #ARGV, 2 do
  local value = string.gsub(ARGV[i + 1], NEW_ID, id)
  if value == '' then
    redis.call('HDEL', KEYS[5], ARGV[i])
  else
    redis.call('HSET', KEYS[5], ARGV[i], value)
  end
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
