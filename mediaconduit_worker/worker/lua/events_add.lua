-- Add one event to a job's event stream; when the job has a webhook whose filter admits the event, hand
-- it to the webhook outbox in the same step, so an event is in both or in neither.
-- KEYS[1] the job's event stream (mediaconduit:events:<task id>), capped at about `maxlen` entries
-- KEYS[2] the job's webhook (hash mediaconduit:webhook:<task id>: url, events, tenant), when it has one
-- KEYS[3] the webhook outbox (stream mediaconduit:webhooks:outbox), never capped
-- ARGV[1] JSON {task_id, event, data (JSON text), maxlen, ttl (seconds), hook (its webhook event or "")}
-- Returns the event's stream id.
local a = cjson.decode(ARGV[1])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', a.maxlen, '*', 'event', a.event, 'data', a.data)
redis.call('EXPIRE', KEYS[1], a.ttl)
if a.hook ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  -- The filter names webhook events (a JSON list or comma-separated); none named admits them all.
  local filter = redis.call('HGET', KEYS[2], 'events')
  if not filter or not string.find(filter, '%a') or string.find(filter, '%f[%w_]' .. a.hook .. '%f[^%w_]') then
    redis.call('XADD', KEYS[3], '*', 'task_id', a.task_id, 'event', a.hook, 'data', a.data, 'event_id', id)
  end
end
return id
