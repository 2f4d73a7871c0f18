-- Extend a result-cache claim, if this job still holds it.
-- KEYS[1] the claim (string: the owner's task id)
-- ARGV[1] JSON {owner, lease_ms}
-- Returns 1 when renewed, 0 when the claim is gone or another job's.
local a = cjson.decode(ARGV[1])
if redis.call('GET', KEYS[1]) == a.owner then return redis.call('PEXPIRE', KEYS[1], a.lease_ms) end
return 0
