-- One page of a thread's replay, read atomically with where the stream's history begins.
-- KEYS: 1 partition epoch, 2 thread stream, 3 thread state, 4 the reader's index
-- ARGV: 1 thread, 2 start ('-' or '(<id>'), 3 count
-- Returns {OK, lo, newest, entries}: lo '' when the stream holds the whole history,
-- ALL_ARCHIVED when every event is in the archive only, else the id from which on every
-- event is in the stream; newest the thread's newest event id ('' for none).
local entries = redis.call('XRANGE', KEYS[2], ARGV[2], '+', 'COUNT', ARGV[3])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local floor = redis.call('HGET', KEYS[4], ARGV[1])
local lo, newest = '', floor or ''
if #last == 0 then
  if floor then lo = ALL_ARCHIVED end
else
  lo = redis.call('HGET', KEYS[3], ARCHIVED_BELOW) or ''
  if not floor then newest = last[1][1] end
end
return {OK, lo, newest, entries}
