-- A thread whose newest events Redis lost while the archive holds them (after ids.lua):
-- its participants' index and its stream continue above the archive's newest id ARGV[2],
-- and the events below `lo` = successor(ARGV[2]) are replayed from the archive. With
-- ARGV[3] = '1' the thread state's blocks and reactions are replaced: every BLOCKED,
-- UNBLOCKED and REACTIONS field goes (reactions of targets below `lo` are then read from
-- the projection) before ARGV[4..], (field, value) pairs from the projection, are set
-- (read receipts, blocks).
-- KEYS: 1 thread stream, 2 thread state, 3 index of participant a, 4 of participant b.
-- ARGV: 1 thread, 2 the archive's newest id of the thread, 3 '1' | '0'.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' and newer(ARGV[2], info[i + 1]) then
      redis.call('XSETID', KEYS[1], ARGV[2])
    end
  end
  local lo = redis.call('HGET', KEYS[2], ARCHIVED_BELOW)
  if not lo or newer(successor(ARGV[2]), lo) then redis.call('HSET', KEYS[2], ARCHIVED_BELOW, successor(ARGV[2])) end
end
if ARGV[3] == '1' then
  for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
    for _, kind in ipairs({BLOCKED, UNBLOCKED, REACTIONS}) do
      if string.sub(name, 1, #kind) == kind then redis.call('HDEL', KEYS[2], name) end
    end
  end
end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
for i = 3, 4 do
  local current = redis.call('HGET', KEYS[i], ARGV[1])
  if not current or newer(ARGV[2], current) then redis.call('HSET', KEYS[i], ARGV[1], ARGV[2]) end
end
return 1
