-- claim: move up to N messages from the queue into one copy's processing list.
--
-- KEYS[1] queue
-- KEYS[2] processing list of the copy
-- KEYS[3] heartbeat of the copy
-- KEYS[4] dead             dead-letter list, newest on the left
-- ARGV[1] how many messages at most
-- ARGV[2] the largest item a processor takes, in bytes (--max-item-bytes)
--
-- Returns NOT_REGISTERED when the copy's heartbeat is gone (it must
-- re-register before claiming), else {messages left in the queue, dead-lettered, item, item, ...}.
-- An item larger than ARGV[2] never leaves Redis: it goes to dead-letter,
-- its record keeping its first ARGV[2] bytes, so that no copy has to
-- download, decode or send back something of unbounded size.
local queue, processing, heartbeat, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local wanted, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
if redis.call('EXISTS', heartbeat) == 0 then
  return redis.status_reply('NOT_REGISTERED')
end
local refusal = wrong_types(queue, 'list', processing, 'list', dead, 'list')
if refusal then
  return refusal
end
local items = {}
local oversized = 0
for _ = 1, wanted do
  local item = redis.call('RPOPLPUSH', queue, processing)
  if not item then
    return {0, oversized, unpack(items)}
  end
  if #item > max_bytes then
    -- It went to the left end of the processing list just now: take it back.
    redis.call('LPOP', processing)
    redis.call('LPUSH', dead, dead_record('an item of ' .. #item .. ' bytes, over --max-item-bytes ' .. max_bytes, item, max_bytes))
    oversized = oversized + 1
  else
    items[#items + 1] = item
  end
end
return {redis.call('LLEN', queue), oversized, unpack(items)}
