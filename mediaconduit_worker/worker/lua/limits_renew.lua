-- Extend a held concurrency slot.
-- KEYS[1] inflight  zset: lease id -> expiry (ms)
-- ARGV[1] JSON {lease, lease_ttl_ms}
-- Returns 1 when renewed, 0 when the lease is gone (it expired and was dropped).
local a = cjson.decode(ARGV[1])
if not redis.call('ZSCORE', KEYS[1], a.lease) then return 0 end
redis.call('ZADD', KEYS[1], now + a.lease_ttl_ms, a.lease)
redis.call('PEXPIRE', KEYS[1], a.lease_ttl_ms)
return 1
