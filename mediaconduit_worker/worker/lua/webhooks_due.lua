-- Hand the webhook retries that are due to one dispatcher: each is leased (its score moved `lease` ms on),
-- so no other dispatcher takes it meanwhile, and one that died holding it has it taken again after that.
-- KEYS[1] the retry set (zset mediaconduit:webhooks:retries: webhook id -> due, ms of the Redis clock)
-- ARGV[1] JSON {lease (ms), count}
-- Returns the webhook ids handed out.
local a = cjson.decode(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, a.count)
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', now + a.lease, id)
end
return due
