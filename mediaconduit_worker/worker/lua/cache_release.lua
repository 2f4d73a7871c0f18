-- Give a result-cache claim up, if this job still holds it.
-- KEYS[1] the claim (string: the owner's task id)
-- ARGV[1] JSON {owner}
-- Returns 1 when released, 0 when another job holds it now.
local a = cjson.decode(ARGV[1])
if redis.call('GET', KEYS[1]) == a.owner then return redis.call('DEL', KEYS[1]) end
return 0
