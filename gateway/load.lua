-- What an edit, delete or read receipt needs to decide, read atomically.
-- KEYS: 1 partition epoch, 2 thread stream, 3 thread state, 4 dedupe key, 5 the user's index
-- ARGV: 1 thread, 2 target event id, 3 user
-- Returns {OK, prior, target payload, deleted-by id, receipt, receipt event, lo}; '' for
-- none; lo as in page.lua (ALL_ARCHIVED: no stream, every event is in the archive only).
local prior = redis.call('GET', KEYS[4]) or ''
local found = redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2], 'COUNT', 1)
local payload = ''
if #found == 1 then payload = found[1][2][2] end
local state = redis.call('HMGET', KEYS[3], DELETED .. ARGV[2], RECEIPT .. ARGV[3],
  RECEIPT_EVENT .. ARGV[3], ARCHIVED_BELOW)
local lo = state[4] or ''
if redis.call('XLEN', KEYS[2]) == 0 and redis.call('HEXISTS', KEYS[5], ARGV[1]) == 1 then
  lo = ALL_ARCHIVED
end
return {OK, prior, payload, state[1] or '', state[2] or '', state[3] or '', lo}
