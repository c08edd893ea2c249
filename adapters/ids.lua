-- Shared head of every Redis script (adapters.record.lua): event ids compared and stepped.
local function newer(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not ams then return false end
  if not bms then return true end
  if #ams ~= #bms then return #ams > #bms end
  if ams ~= bms then return ams > bms end
  return tonumber(aseq) > tonumber(bseq)
end

local function successor(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms .. '-' .. string.format('%.0f', tonumber(seq) + 1)
end
