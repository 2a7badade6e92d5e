-- requeue_dead: put dead-lettered messages back on the queue as new ones,
-- their delivery count reset (`app dead requeue`).
--
-- KEYS[1] dead             dead-letter list, newest on the left
-- KEYS[2] queue
-- ARGV[1] records at the oldest end that earlier calls looked at and kept
-- ARGV[2] how many records to look at in this call
-- ARGV[3] wake channel
-- ARGV[4..] the seqs to requeue; none means every message
--
-- Looks at records oldest first. A record whose item is a whole message
-- (and, when seqs are given, one of them) leaves dead-letter, and its item,
-- without its delivery count, is pushed on the left of the queue as the
-- generator pushes a new message. Kept in dead-letter: items that are not
-- messages and items that were cut (over --max-item-bytes): back on the
-- queue they would only come back here, so nothing loops. A dead-lettered
-- message was never committed (its claim was taken back first), so a
-- requeued one is still processed exactly once.
-- Returns {requeued, kept (looked at and left), looked at, the requeued
-- seqs...}. Both keys are checked before the first write.
local dead, queue = KEYS[1], KEYS[2]
local skip, batch, wake_channel = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local refusal = wrong_types(dead, 'list', queue, 'list')
if refusal then
  return refusal
end
local wanted = nil
if #ARGV > 3 then
  wanted = {}
  for i = 4, #ARGV do
    wanted[ARGV[i]] = true
  end
end
-- The list is newest first, so the oldest unlooked-at records end the range.
local records = redis.call('LRANGE', dead, -(skip + batch), -(skip + 1))
local requeued, kept, seqs = 0, 0, {}
for i = #records, 1, -1 do
  local record = records[i]
  local ok, dead_letter = pcall(cjson.decode, record)
  local item = ok and type(dead_letter) == 'table' and not dead_letter.truncated
    and type(dead_letter.item) == 'string' and dead_letter.item
  local msg = item and as_message(item)
  local seq = msg and string.format('%d', msg.seq)
  if msg and (wanted == nil or wanted[seq]) and redis.call('LREM', dead, -1, record) == 1 then
    local _, fresh = deliveries_of(item, msg)
    redis.call('LPUSH', queue, fresh)
    requeued = requeued + 1
    seqs[#seqs + 1] = seq
  else
    kept = kept + 1
  end
end
if requeued > 0 then
  redis.call('PUBLISH', wake_channel, 'job')
end
local answer = {requeued, kept, #records}
for _, seq in ipairs(seqs) do
  answer[#answer + 1] = seq
end
return answer
