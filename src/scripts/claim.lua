-- claim: move up to N messages from the queue into one copy's processing list.
--
-- KEYS[1] queue
-- KEYS[2] processing list of the copy
-- KEYS[3] heartbeat of the copy
-- ARGV[1] how many messages at most
--
-- Returns {-1} when the copy's heartbeat is gone (it must re-register before
-- claiming), else {messages left in the queue, item, item, ...}.
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {-1}
end
local wanted = tonumber(ARGV[1])
local out = {0}
for _ = 1, wanted do
  local item = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if not item then
    return out
  end
  out[#out + 1] = item
end
out[1] = redis.call('LLEN', KEYS[1])
return out
