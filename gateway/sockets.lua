-- sockets.lua: how many WebSockets a user has open, per gateway, so that a cap holds across
-- every gateway (protocol.md section 8, DUOLOGUE_MAX_SOCKETS); gateway/socket_caps.py.
-- KEYS[1] the user's hash: '<gateway>' -> its sockets there, '<gateway>:t' -> lease end ms
-- ARGV[1] 'join' | 'set'   ARGV[2] gateway id   ARGV[3] this gateway's count for the user
-- (after the change)   ARGV[4] lease ms   ARGV[5] the cap ('join')
-- join: 0 (refused, nothing written) when the live counts of the other gateways plus
-- ARGV[3] exceed the cap; a dead gateway's count (lease ended) is removed on the way.
-- set: writes ARGV[3] (0 removes this gateway's fields). Answers 1 when written.
local key, mode, gateway = KEYS[1], ARGV[1], ARGV[2]
local count, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if mode == 'join' then
  local fields = redis.call('HGETALL', key)
  local counts, ends = {}, {}
  for i = 1, #fields, 2 do
    local name = fields[i]
    if string.sub(name, -2) == ':t' then
      ends[string.sub(name, 1, -3)] = tonumber(fields[i + 1])
    else
      counts[name] = tonumber(fields[i + 1])
    end
  end
  local others = 0
  for name, n in pairs(counts) do
    if (ends[name] or 0) <= now then
      redis.call('HDEL', key, name, name .. ':t')
    elseif name ~= gateway then
      others = others + n
    end
  end
  if others + count > tonumber(ARGV[5]) then return 0 end
end
if count <= 0 then
  redis.call('HDEL', key, gateway, gateway .. ':t')
else
  redis.call('HSET', key, gateway, count, gateway .. ':t', string.format('%d', now + lease))
  redis.call('PEXPIRE', key, lease * 2)
end
return 1
