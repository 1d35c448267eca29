"""Lua scripts: each runs atomically on the server, so ownership checks and counts are exact.

Why scripts: XAUTOCLAIM does not return the times-delivered counter, and
renewing or giving back an entry must first check that this consumer still
owns it; done in two round trips, another consumer could claim in between.
"""

from __future__ import annotations

REQUEUED_IDLE_MS = 10**10
"""Idle time given to an entry handed back (requeue, close): any claim sweep takes it at once.
Below the server's clock in ms, which XCLAIM requires (a larger IDLE is silently ignored)."""

CLAIM = """
-- KEYS[1] stream; ARGV: group, consumer, min idle ms, max entries
-- Claims entries idle >= min idle (crashed owners, or handed back), returns
-- {id, times delivered, {field, value, ...}} for each, and removes former
-- owners left with nothing pending (their entries were all taken over).
local key, group, me = KEYS[1], ARGV[1], ARGV[2]
local idle = redis.call('XPENDING', key, group, 'IDLE', ARGV[3], '-', '+', ARGV[4])
if #idle == 0 then return {} end
local ids, counts, owners = {}, {}, {}
for i, p in ipairs(idle) do
  ids[i] = p[1]
  counts[p[1]] = p[4] + 1
  owners[p[2]] = true
end
local out = {}
for _, e in ipairs(redis.call('XCLAIM', key, group, me, ARGV[3], unpack(ids))) do
  if e and e[2] then out[#out + 1] = {e[1], counts[e[1]], e[2]} end  -- trimmed: gone from the PEL
end
for owner in pairs(owners) do
  if owner ~= me and #redis.call('XPENDING', key, group, '-', '+', 1, owner) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', key, group, owner)
  end
end
return out
"""

SETTLE = """
-- KEYS[1] stream; ARGV: group, consumer, idle ms to set, leave (0/1), ids...
-- For the ids this consumer still owns: set their idle time without counting a
-- delivery (0 renews the claim; REQUEUED_IDLE_MS hands them back). With leave=1,
-- the consumer is then removed from the group if nothing is pending for it.
local key, group, me = KEYS[1], ARGV[1], ARGV[2]
local mine = {}
for i = 5, #ARGV do
  local p = redis.call('XPENDING', key, group, ARGV[i], ARGV[i], 1)[1]
  if p and p[2] == me and p[3] < HANDED_BACK then mine[#mine + 1] = ARGV[i] end
end
for i = 1, #mine, 1000 do
  local args = {'XCLAIM', key, group, me, 0}
  for j = i, math.min(i + 999, #mine) do args[#args + 1] = mine[j] end
  args[#args + 1] = 'IDLE'
  args[#args + 1] = ARGV[3]
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))  -- (unpack() expands only as the last argument of a call)
end
if ARGV[4] == '1' and #redis.call('XPENDING', key, group, '-', '+', 1, me) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', key, group, me)
end
return #mine
""".replace("HANDED_BACK", str(REQUEUED_IDLE_MS // 2))

DECLARE_TOPIC = """
-- KEYS[1] stream: create it empty if missing (no entry added); error if the key is not a stream
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'bridgeq:declare', '$', 'MKSTREAM')
  redis.call('XGROUP', 'DESTROY', KEYS[1], 'bridgeq:declare')
elseif t ~= 'stream' then
  return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' holds a ' .. t .. ', not a stream')
end
return 0
"""
