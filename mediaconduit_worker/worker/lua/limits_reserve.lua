-- Hold an estimated cost against every scope's budget at once, or say which scope refuses.
-- KEYS[1..] (spend hash, held set) per spend scope; a held member is "reservation:amount"
-- ARGV[1] JSON {reservation, amount (a decimal string), hold_ms, budgets (a decimal string per scope, '' none)}
-- Returns {0} when held everywhere, else {scope index, spent, held} of the first scope that refuses.
local a = cjson.decode(ARGV[1])
local amount = tonumber(a.amount)
local mine = a.reservation .. ':' .. a.amount  -- a repeat of a call whose reply was lost does not count itself
local scopes = #KEYS / 2
for i = 1, scopes do
  local held_key = KEYS[2 * i]
  redis.call('ZREMRANGEBYSCORE', held_key, '-inf', now)
  local budget = a.budgets[i]
  if budget ~= '' then
    local held = 0
    for _, m in ipairs(redis.call('ZRANGE', held_key, 0, -1)) do
      if m ~= mine then held = held + tonumber(string.match(m, ':([^:]+)$')) end
    end
    local spent = tonumber(redis.call('HGET', KEYS[2 * i - 1], 'spent') or '0')
    if spent + held + amount > tonumber(budget) + 1e-12 then
      return {i, tostring(spent), tostring(held)}
    end
  end
end
for i = 1, scopes do
  redis.call('ZADD', KEYS[2 * i], now + a.hold_ms, mine)
  redis.call('PEXPIRE', KEYS[2 * i], a.hold_ms)
end
return {0}
