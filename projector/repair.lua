-- A thread whose newest events Redis lost while the archive holds them (after ids.lua):
-- its participants' index and its stream continue above the archive's newest id ARGV[2],
-- and the events below `lo` = successor(ARGV[2]) are replayed from the archive. ARGV[3..]
-- are (field, value) pairs of the thread state to restore (read receipts).
-- KEYS: 1 thread stream, 2 thread state, 3 index of participant a, 4 of participant b.
-- ARGV: 1 thread, 2 the archive's newest id of the thread.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' and newer(ARGV[2], info[i + 1]) then
      redis.call('XSETID', KEYS[1], ARGV[2])
    end
  end
  local lo = redis.call('HGET', KEYS[2], ARCHIVED_BELOW)
  if not lo or newer(successor(ARGV[2]), lo) then redis.call('HSET', KEYS[2], ARCHIVED_BELOW, successor(ARGV[2])) end
  for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
for i = 3, 4 do
  local current = redis.call('HGET', KEYS[i], ARGV[1])
  if not current or newer(ARGV[2], current) then redis.call('HSET', KEYS[i], ARGV[1], ARGV[2]) end
end
return 1
