-- presence.lua: a user's presence lease on one gateway goes up (the first socket here, or
-- a heartbeat) or down (the last socket here closed), atomically, and the change is
-- published when the user's status changes (adapters/presence.py has the record).
-- KEYS[1] the user's presence hash
-- ARGV[1] 'up' | 'down'   ARGV[2] gateway id   ARGV[3] lease ms
-- ARGV[4] the user's presence channel   ARGV[5] the user id
-- Expired leases (of dead gateways) are folded into `ls` and removed on the way.
-- Answers 1 when a presence frame was published, else 0.
local LS = 'ls'
local key, mode, gateway, lease = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local now_s = string.format('%d', now)
local fields = redis.call('HGETALL', key)
local was_online, others_online, seen, stale = false, false, nil, {}
for i = 1, #fields, 2 do
  local name, ms = fields[i], tonumber(fields[i + 1])
  if ms ~= nil and name ~= LS then
    if ms + lease > now then
      was_online = true
      if name ~= gateway then others_online = true end
    else
      stale[#stale + 1] = name
      if seen == nil or ms > seen then seen = ms end
    end
  elseif ms ~= nil and (seen == nil or ms > seen) then
    seen = ms
  end
end
if #stale > 0 then
  redis.call('HDEL', key, unpack(stale))
  redis.call('HSET', key, LS, string.format('%d', seen))
end
local head = '{"type":"presence","user":"' .. ARGV[5] .. '",'
if mode == 'up' then
  redis.call('HSET', key, gateway, now_s)
  if not was_online then
    redis.call('PUBLISH', ARGV[4], head .. '"online":true,"last_seen":null}')
    return 1
  end
  return 0
end
redis.call('HDEL', key, gateway)
if others_online then
  return 0
end
redis.call('HSET', key, LS, now_s)
redis.call('PUBLISH', ARGV[4], head .. '"online":false,"last_seen":' .. now_s .. '}')
return 1
