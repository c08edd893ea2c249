-- The send budget (protocol.md section 8): two token buckets per user, commands and body
-- bytes, refilled by Redis TIME, in one hash (c, b, t). Functions only (after the record
-- prelude); append.lua uses them on one Redis, send_budget.lua on a Redis Cluster, where
-- the user's key lives in another slot than the thread's.
-- spec: 'rate burst byte_rate byte_burst cost' (per second; a rate of 0 turns that bucket
-- off; cost: the body's UTF-8 bytes).

local function budget_spec(spec)
  local rate, burst, brate, bburst, cost = string.match(spec, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  return {rate = tonumber(rate), burst = tonumber(burst), brate = tonumber(brate),
    bburst = tonumber(bburst), cost = tonumber(cost)}
end

local function budget_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The buckets refilled to now: commands, bytes, now (ms).
local function budget_levels(key, s)
  local now = budget_now()
  local got = redis.call('HMGET', key, 'c', 'b', 't')
  local c, b = tonumber(got[1]) or s.burst, tonumber(got[2]) or s.bburst
  local dt = math.max(0, now - (tonumber(got[3]) or now)) / 1000
  if s.rate > 0 then c = math.min(s.burst, c + dt * s.rate) end
  if s.brate > 0 then b = math.min(s.bburst, b + dt * s.brate) end
  return c, b, now
end

-- Returns the wait in ms (> 0: refused), or 0 and what to charge (nil: both buckets off).
local function budget_take(key, spec)
  local s = budget_spec(spec)
  if s.rate <= 0 and s.brate <= 0 then return 0, nil end
  local c, b, now = budget_levels(key, s)
  local wait = 0
  if s.rate > 0 and c < 1 then wait = math.ceil((1 - c) / s.rate * 1000) end
  if s.brate > 0 then
    s.cost = math.min(s.cost, s.bburst)  -- a body above the burst passes when the bucket is full
    if b < s.cost then wait = math.max(wait, math.ceil((s.cost - b) / s.brate * 1000)) end
  end
  if wait > 0 then return wait, nil end
  return 0, {s, c - 1, b - s.cost, now}
end

local function budget_store(key, s, c, b, now)
  redis.call('HSET', key, 'c', string.format('%.6f', c), 'b', string.format('%.3f', b),
    't', string.format('%d', now))
  local full = 0  -- until both buckets are full again: then the key says nothing
  if s.rate > 0 then full = math.max(full, (s.burst - c) / s.rate) end
  if s.brate > 0 then full = math.max(full, (s.bburst - b) / s.brate) end
  redis.call('PEXPIRE', key, math.ceil(full * 1000) + 1000)
end

local function budget_charge(key, taken)
  budget_store(key, taken[1], taken[2], taken[3], taken[4])
end

-- Gives back what a take charged (the command was not decided: a duplicate, decide again).
local function budget_refund(key, spec)
  local s = budget_spec(spec)
  if s.rate <= 0 and s.brate <= 0 then return end
  local c, b, now = budget_levels(key, s)
  if s.brate > 0 then s.cost = math.min(s.cost, s.bburst) end
  budget_store(key, s, math.min(s.burst, c + 1), math.min(s.bburst, b + s.cost), now)
end
