-- Take one token of a user's read budget (protocol.md section 8: sync, watch and HTTP
-- reads share it), refilled by Redis TIME (after the prelude).
-- KEYS: 1 the user's read budget. ARGV: 1 rate per second, 2 burst.
-- Returns 0 when taken, else the ms until a token is there.
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local got = redis.call('HMGET', KEYS[1], 'c', 't')
local c = tonumber(got[1]) or burst
c = math.min(burst, c + math.max(0, now - (tonumber(got[2]) or now)) / 1000 * rate)
if c < 1 then return math.ceil((1 - c) / rate * 1000) end
redis.call('HSET', KEYS[1], 'c', string.format('%.6f', c - 1), 't', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - c + 1) / rate * 1000) + 1000)
return 0
