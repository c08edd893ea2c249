-- What a command needs to decide, read atomically (after the prelude, ids.lua, fence.lua).
-- KEYS: 1 partition epoch, 2 thread stream, 3 thread state, 4 dedupe key, 5 the user's index
-- ARGV: 1 thread, 2 target event id ('' for none), 3.. thread state fields to read
-- Returns {OK, prior, target payload, lo, values of the fields...}; '' for none; lo as in
-- page.lua (ALL_ARCHIVED: no stream, every event is in the archive only).
local prior = redis.call('GET', KEYS[4]) or ''
local payload = ''
if ARGV[2] ~= '' then
  local found = redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2], 'COUNT', 1)
  if #found == 1 then payload = found[1][2][2] end
end
local lo = redis.call('HGET', KEYS[3], ARCHIVED_BELOW) or ''
if redis.call('XLEN', KEYS[2]) == 0 and redis.call('HEXISTS', KEYS[5], ARGV[1]) == 1 then
  lo = ALL_ARCHIVED
end
local reply = {OK, prior, payload, lo}
for i = 3, #ARGV do
  reply[#reply + 1] = redis.call('HGET', KEYS[3], ARGV[i]) or ''
end
return reply
