-- Hand the messages of dead consumers (or of one consumer, ``only``) back to the lists they came from.
-- KEYS[1] consumers  hash: consumer id -> JSON list of the source lists it receives from
-- KEYS[2] dead       hash: consumer id -> when a sweep first found its lease gone (ms, Redis' clock)
-- ARGV[1] JSON object:
--   lease      prefix of a consumer's lease key (the key exists while the consumer lives)
--   inflight   prefix of a consumer's in-flight lists (``inflight .. consumer .. '|' .. source``)
--   mark       what a handed-back message starts with instead of its first ``{`` (Celery then sees
--              it as redelivered)
--   forget     ms a dead consumer stays listed after its lease went (a stalled one may come back)
--   only       a consumer handing back its own messages ("" sweeps every consumer whose lease is gone)
--   drop       with ``only``: also unlist it and delete its lease (it is closing)
-- Returns how many messages went back. ``now`` (ms) comes from the now.lua prelude.
local consumers, dead = KEYS[1], KEYS[2]
local a = cjson.decode(ARGV[1])
local moved = 0

local function hand_back(consumer, sources)
  for _, source in ipairs(cjson.decode(sources)) do
    local inflight = a.inflight .. consumer .. '|' .. source
    while true do
      -- Newest first, each to the consuming end: the oldest ends up next in line, as it was.
      local raw = redis.call('LPOP', inflight)
      if not raw then break end
      if string.sub(raw, 1, #a.mark) ~= a.mark and string.sub(raw, 1, 1) == '{' then
        raw = a.mark .. string.sub(raw, 2)
      end
      redis.call('RPUSH', source, raw)
      moved = moved + 1
    end
  end
end

if a.only ~= '' then
  local sources = redis.call('HGET', consumers, a.only)
  if sources then hand_back(a.only, sources) end
  if a.drop then
    redis.call('HDEL', consumers, a.only)
    redis.call('HDEL', dead, a.only)
    redis.call('DEL', a.lease .. a.only)
  end
  return moved
end

local listed = redis.call('HGETALL', consumers)
for i = 1, #listed, 2 do
  local consumer, sources = listed[i], listed[i + 1]
  if redis.call('EXISTS', a.lease .. consumer) == 0 then
    hand_back(consumer, sources)
    local since = tonumber(redis.call('HGET', dead, consumer))
    if not since then
      redis.call('HSET', dead, consumer, now)
    elseif now - since > a.forget then
      redis.call('HDEL', consumers, consumer)
      redis.call('HDEL', dead, consumer)
    end
  end
end
return moved
