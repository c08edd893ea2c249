-- Rewrite a dedupe record unchanged (after the record prelude, ids.lua and fence.lua): a
-- write that replicates, so the WAIT after it (DUOLOGUE_ACK_REPLICAS) tells whether the
-- replicas hold everything before it, the recorded event included (protocol.md section 9).
-- KEYS: 1 partition epoch, 2 the dedupe key. ARGV: 1 the recorded event id.
-- Returns {OK, id}.
redis.call('SET', KEYS[2], ARGV[1], 'KEEPTTL', 'XX')
return {OK, ARGV[1]}
