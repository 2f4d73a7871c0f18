-- Settle the spend of a call made without a route slot (a direct job of a batch): spend.lua, atomically.
-- KEYS[1..] (spend hash, held set) per spend scope
-- ARGV[1] JSON {usd (a decimal string, '0' for a call that failed), reservation ('' none),
--   expire (seconds per spend scope, 0 none)}
local a = cjson.decode(ARGV[1])
settle_spend(1, a)
return 0
