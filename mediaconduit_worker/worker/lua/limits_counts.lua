-- Live leases per candidate (expired ones dropped first).
-- KEYS[1..] inflight zsets: lease id -> expiry (ms)
-- Returns one count per key.
local out = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  out[i] = redis.call('ZCARD', key)
end
return out
