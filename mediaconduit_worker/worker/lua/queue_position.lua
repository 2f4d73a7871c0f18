-- Where a queued message waits: how many messages its consumers take before it, itself included.
-- KEYS[1] queue     list: producers LPUSH, consumers take from the right (transport.py)
-- ARGV[1] JSON {needle, chunk}: a string only that message holds (its task id), and how many entries to read at once.
-- Returns the 1-based position counted from the consuming end, or 0 when the message is not in the list.
local a = cjson.decode(ARGV[1])
local n = redis.call('LLEN', KEYS[1])
local done = 0
while done < n do
  local items = redis.call('LRANGE', KEYS[1], -(done + a.chunk), -(done + 1))
  if #items == 0 then break end
  for k = #items, 1, -1 do
    if string.find(items[k], a.needle, 1, true) then return done + (#items - k) + 1 end
  end
  done = done + #items
end
return 0
