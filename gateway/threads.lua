-- A user's thread index across every partition, read atomically in one call (one Redis
-- only: on a Redis Cluster the partitions live in other slots, and the gateway pipelines
-- the same reads per node). A partition is fenced as in fence.lua.
-- KEYS: 1..n the partitions' epochs, then n+1..2n the user's index in each partition
-- Returns {FENCED} if any partition is fenced, else {OK, thread, id, thread, id, ...}.
local n = #KEYS / 2
local info
for i = 1, n do
  local epoch = redis.call('GET', KEYS[i])
  if epoch then
    info = info or redis.call('INFO', 'server')
    if epoch == '' or not string.find(info, 'run_id:' .. epoch, 1, true) then
      return {FENCED}
    end
  end
end
local out = {OK}
for i = n + 1, 2 * n do
  local index = redis.call('HGETALL', KEYS[i])
  for j = 1, #index do out[#out + 1] = index[j] end
end
return out
