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
--
-- The whole batch moves with a few list commands, whatever its size, and
-- ends as N RPOPLPUSHes would leave it: the oldest messages (the right end
-- of the queue) at the left of the processing list, the oldest of them
-- rightmost. The reads come first and the push to the processing list is
-- the first write, so a key of the wrong type refuses the call before
-- anything changed; the dead-letter list is checked only when an item is
-- bound for it.
local queue, processing, heartbeat, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local wanted, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
if redis.call('EXISTS', heartbeat) == 0 then
  return redis.status_reply('NOT_REGISTERED')
end
local read, batch = pcall(redis.call, 'LRANGE', queue, -wanted, -1)
if not read then
  return wrong_type(queue, 'list')
end
if #batch == 0 then
  return {0, 0}
end
-- LRANGE lists the batch newest first; it is pushed oldest first.
local items, records = {}, {}
for i = #batch, 1, -1 do
  local item = batch[i]
  if #item > max_bytes then
    records[#records + 1] = dead_record('an item of ' .. #item .. ' bytes, over --max-item-bytes ' .. max_bytes, item, max_bytes)
  else
    items[#items + 1] = item
  end
end
if #records > 0 then
  local refusal = wrong_types(processing, 'list', dead, 'list') or denied({'lpush', dead, 'x'})
  if refusal then
    return refusal
  end
end
local refusal = denied({'lpush', processing, 'x'}, {'ltrim', queue, '0', '0'})
if refusal then
  return refusal
end
if #items > 0 then
  local pushed = pcall(redis.call, 'LPUSH', processing, unpack(items))
  if not pushed then
    return wrong_type(processing, 'list')
  end
end
if #records > 0 then
  redis.call('LPUSH', dead, unpack(records))
end
redis.call('LTRIM', queue, 0, -#batch - 1)
-- Oldest first in the answer, the order they were queued in.
local answer = {redis.call('LLEN', queue), #records}
for i = 1, #items do
  answer[#answer + 1] = items[i]
end
return answer
