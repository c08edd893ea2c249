-- Shared head of the gateway's read scripts (prepended to each): the partition's epoch
-- check. KEYS[1] is always the partition epoch. A partition is fenced while its epoch
-- names another Redis run than this one (adapters/record.py).
local epoch = redis.call('GET', KEYS[1])
if epoch and (epoch == '' or
    not string.find(redis.call('INFO', 'server'), 'run_id:' .. epoch, 1, true)) then
  return {FENCED}
end
