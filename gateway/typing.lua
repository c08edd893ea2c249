-- Relay a typing notice unless the receiver blocks the thread, at most one per (sender,
-- thread) every ARGV[4] ms (after the prelude).
-- KEYS: 1 thread state, 2 the sender's typing throttle in this thread.
-- ARGV: 1 the receiver's block field (b:<receiver>), 2 the receiver's channel, 3 the
-- message, 4 the throttle in ms (0: none). Returns 1 relayed, 0 dropped.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local every = tonumber(ARGV[4])
if every > 0 and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', every) then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
