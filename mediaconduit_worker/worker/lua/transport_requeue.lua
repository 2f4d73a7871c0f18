-- Put one message a consumer holds back at the consuming end of its source list (a reject with requeue).
-- KEYS[1] inflight  the consumer's in-flight list the message is in
-- KEYS[2] source    the list it came from
-- ARGV[1] JSON object:
--   message  the message, exactly as received
--   mark     what a handed-back message starts with instead of its first ``{`` (transport_reclaim.lua)
-- Nothing moves when the message is no longer held (a sweep already handed it back): no copy is made.
local a = cjson.decode(ARGV[1])
local raw, mark = a.message, a.mark
if redis.call('LREM', KEYS[1], 1, raw) == 0 then return 0 end
if string.sub(raw, 1, #mark) ~= mark and string.sub(raw, 1, 1) == '{' then
  raw = mark .. string.sub(raw, 2)
end
redis.call('RPUSH', KEYS[2], raw)
return 1
