-- Prelude of the scripts that settle a call's spend (limits_release.lua, limits_settle.lua): the one place
-- spend is added up.
-- settle_spend(first, a): KEYS from index `first` are (spend hash, held set) pairs, one per spend scope.
-- For each, drop the budget hold a.reservation ('' none) and, when a.usd > 0, add a.usd to the hash's
-- `spent` and 1 to its `calls`, and expire the hash after a.expire[i] seconds (0: never).
local function settle_spend(first, a)
  local usd = tonumber(a.usd)
  for i = first, #KEYS, 2 do
    if a.reservation ~= '' then redis.call('ZREM', KEYS[i + 1], a.reservation) end
    if usd > 0 then
      redis.call('HINCRBYFLOAT', KEYS[i], 'spent', a.usd)
      redis.call('HINCRBY', KEYS[i], 'calls', 1)
      local expire = tonumber(a.expire[(i - first) / 2 + 1])
      if expire > 0 then redis.call('EXPIRE', KEYS[i], expire) end
    end
  end
end
