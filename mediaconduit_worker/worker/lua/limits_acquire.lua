-- Take a concurrency slot of a route candidate unless it cools down or is at a limit.
-- KEYS[1] cool      string, set while the candidate cools down
-- KEYS[2] inflight  zset: lease id -> expiry (ms)
-- KEYS[3] rate      zset: lease id -> call start (ms), for rpm
-- KEYS[4] tokens    zset: "lease id:tokens" -> call start (ms), for tpm
-- ARGV[1] JSON {lease, lease_ttl_ms, max_concurrency, rpm, window_ms, tpm, est_tokens}; a limit of 0 is none.
-- Returns {1, now} with the slot taken, else {0, reason, ms until it may free}.
local a = cjson.decode(ARGV[1])
-- A repeat of a call whose reply was lost (the client retried it) finds its slot taken already.
if redis.call('ZSCORE', KEYS[2], a.lease) then return {1, now} end
local cool = redis.call('PTTL', KEYS[1])
if cool > 0 then return {0, 'cooldown', cool} end
local lease, ttl, window = a.lease, a.lease_ttl_ms, a.window_ms
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if a.max_concurrency > 0 and redis.call('ZCARD', KEYS[2]) >= a.max_concurrency then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {0, 'concurrency', tonumber(first[2]) - now}
end
if a.rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  if redis.call('ZCARD', KEYS[3]) >= a.rpm then
    local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {0, 'rpm', tonumber(first[2]) + window - now}
  end
end
if a.tpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
  local entries = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
  local used = 0
  for i = 1, #entries, 2 do used = used + tonumber(string.match(entries[i], ':(%d+)$')) end
  if #entries > 0 and used + a.est_tokens > a.tpm then
    return {0, 'tpm', tonumber(entries[2]) + window - now}
  end
end
redis.call('ZADD', KEYS[2], now + ttl, lease)
redis.call('PEXPIRE', KEYS[2], ttl)
if a.rpm > 0 then
  redis.call('ZADD', KEYS[3], now, lease)
  redis.call('PEXPIRE', KEYS[3], window)
end
if a.tpm > 0 then
  redis.call('ZADD', KEYS[4], now, lease .. ':' .. a.est_tokens)
  redis.call('PEXPIRE', KEYS[4], window)
end
return {1, now}
