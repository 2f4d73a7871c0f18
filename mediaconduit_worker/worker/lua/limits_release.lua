-- Give a route candidate's slot back, record the call, and settle its spend (spend.lua), atomically.
-- KEYS[1] inflight  zset: lease id -> expiry (ms)
-- KEYS[2] free      list of tokens waiters BLPOP
-- KEYS[3] latency   list of "at ms:duration ms", newest first
-- KEYS[4] stats     hash: c:MINUTE and f:MINUTE counts, usd, last_error, last_error_at, last_ok_at
-- KEYS[5] fails     zset: lease id -> failure time (ms)
-- KEYS[6] cool      string, set while the candidate cools down
-- KEYS[7] tokens    zset: "lease id:tokens" -> call start (ms)
-- KEYS[8..] (spend hash, held set) per spend scope
-- ARGV[1] JSON {lease, outcome ('ok'|'transient'|'permanent'|'skipped'), duration_ms, max_concurrency,
--   allowed_fails, cooldown_window_ms, cooldown_ms, retry_after_ms, est_tokens, actual_tokens (-1: unknown),
--   usd (a decimal string), error, reservation ('' none), expire (seconds per spend scope, 0 none),
--   latency_samples, latency_max_age, stats_minutes}
-- Returns the cooldown started, in ms (0: none).
local a = cjson.decode(ARGV[1])
local lease = a.lease
redis.call('ZREM', KEYS[1], lease)
if a.max_concurrency > 0 then
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, a.max_concurrency - 1)
  redis.call('PEXPIRE', KEYS[2], 60000)
end
settle_spend(8, a)
if a.outcome == 'skipped' then return 0 end
local minute = math.floor(now / 60000)
redis.call('HINCRBY', KEYS[4], 'c:' .. minute, 1)
if a.outcome ~= 'ok' then
  redis.call('HINCRBY', KEYS[4], 'f:' .. minute, 1)
  redis.call('HSET', KEYS[4], 'last_error', a.error, 'last_error_at', now)
else
  redis.call('HSET', KEYS[4], 'last_ok_at', now)
  redis.call('LPUSH', KEYS[3], now .. ':' .. a.duration_ms)
  redis.call('LTRIM', KEYS[3], 0, a.latency_samples - 1)
  redis.call('EXPIRE', KEYS[3], a.latency_max_age)
end
if tonumber(a.usd) > 0 then redis.call('HINCRBYFLOAT', KEYS[4], 'usd', a.usd) end
for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
  local m = tonumber(string.match(field, '^[cf]:(%d+)$'))
  if m and m < minute - a.stats_minutes - 1 then redis.call('HDEL', KEYS[4], field) end
end
if a.actual_tokens >= 0 then
  local member = lease .. ':' .. a.est_tokens
  local score = redis.call('ZSCORE', KEYS[7], member)
  if score then
    redis.call('ZREM', KEYS[7], member)
    redis.call('ZADD', KEYS[7], score, lease .. ':' .. a.actual_tokens)
  end
end
if a.outcome == 'transient' then
  local window = a.cooldown_window_ms
  redis.call('ZADD', KEYS[5], now, lease)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - window)
  redis.call('PEXPIRE', KEYS[5], window)
  if redis.call('ZCARD', KEYS[5]) >= a.allowed_fails then
    local ms = math.max(a.cooldown_ms, a.retry_after_ms)
    if ms > 0 then
      redis.call('SET', KEYS[6], now + ms, 'PX', ms)
      redis.call('DEL', KEYS[5])
      return ms
    end
  end
end
return 0
