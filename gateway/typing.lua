-- Relay a typing notice unless the receiver blocks the thread (after the prelude).
-- KEYS: 1 thread state. ARGV: 1 the receiver's block field (b:<receiver>), 2 the
-- receiver's channel, 3 the message. Returns 1 relayed, 0 dropped.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
