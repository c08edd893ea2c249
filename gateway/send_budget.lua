-- Take (or give back) one command of a user's send budget on its own (after the record
-- prelude and budget.lua): on a Redis Cluster the budget's key is in the user's slot, not
-- the thread's, so append.lua cannot take it in the same script (protocol.md section 9).
-- KEYS: 1 the user's budget. ARGV: 1 the budget spec (budget.lua), 2 'take' or 'refund'.
-- Returns 0 when taken (or given back), else the wait in ms.
if ARGV[2] == 'refund' then
  budget_refund(KEYS[1], ARGV[1])
  return 0
end
local wait, taken = budget_take(KEYS[1], ARGV[1])
if wait > 0 then return wait end
if taken then budget_charge(KEYS[1], taken) end
return 0
