-- enqueue: the fenced write of one message (or, at --interval-ms 0, of a
-- batch) by the generator.
--
-- KEYS[1] lease
-- KEYS[2] seq              counter; the messages' numbers are assigned here
-- KEYS[3] queue            list; new messages are pushed on the left, claimed from the right
-- KEYS[4] last enqueue     see acquire_lease; it expires one interval (less 10 ms)
--                          after the newest message: while it exists, no message
--                          may be added, and its PTTL tells a new generator how
--                          long to wait before its first. Both by Redis's clock.
-- ARGV[1] holder value "<epoch>:<copy id>" the caller believes it holds
-- ARGV[2] wake channel: '<channel>' for every copy; one message wakes only the
--         copies of shard '<channel>:<seq mod shards>' when any listen there
-- ARGV[3] last enqueue value "<generated_at_ms> <epoch> <producer>"
-- ARGV[4] queue cap: when the queue already holds this many, write nothing (0: no cap)
-- ARGV[5] the interval in ms (0: the last enqueue never expires)
-- ARGV[6] how many wake shards there are
-- ARGV[7..] each message's JSON after its seq field: ',"epoch":...}'
--
-- Returns the seq of the first message (the others follow it in order),
-- NOT_HOLDER when the caller does not hold the lease, QUEUE_FULL when the
-- queue is at its cap, TOO_SOON when the newest message is less than an
-- interval (less 10 ms) old
-- by Redis's clock (a tick that Redis ran late, a pause, a handover); in
-- those three cases nothing changed. The types of seq and queue
-- are checked before seq is counted up, so that no seq is ever burnt.
-- A wake-up is published only when the queue was empty: otherwise every
-- processor is either busy with the queue already or will see it on its poll.
-- The queue's type is checked by the LLEN of the cap when there is a cap.
local lease, seq, queue, last_enqueue = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local holder, wake_channel, last, cap, interval_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local shards = tonumber(ARGV[6])
local first_body = 7
local current, lease_refusal = get_string(lease)
if lease_refusal then
  return lease_refusal
end
if current ~= holder then
  return redis.status_reply('NOT_HOLDER')
end
local refusal = wrong_types(seq, 'counter', last_enqueue, 'string')
if refusal then
  return refusal
end
local spacing_ms = interval_ms - 10
if spacing_ms > 0 and redis.call('EXISTS', last_enqueue) == 1 then
  return redis.status_reply('TOO_SOON')
end
if cap > 0 then
  local read, length = pcall(redis.call, 'LLEN', queue)
  if not read then
    return wrong_type(queue, 'list')
  end
  if length >= cap then
    return redis.status_reply('QUEUE_FULL')
  end
else
  refusal = wrong_type(queue, 'list')
  if refusal then
    return refusal
  end
end
local n = #ARGV - first_body + 1
local first = redis.call('INCRBY', seq, n) - n + 1
local items = {}
for i = 1, n do
  items[i] = '{"seq":' .. string.format('%d', first + i - 1) .. ARGV[first_body + i - 1]
end
local length = redis.call('LPUSH', queue, unpack(items))
if spacing_ms > 0 then
  redis.call('SET', last_enqueue, last, 'PX', spacing_ms)
else
  redis.call('SET', last_enqueue, last)
end
if length == n then
  local heard = 0
  if n == 1 then
    heard = redis.call('PUBLISH', wake_channel .. ':' .. string.format('%d', first % shards), 'job')
  end
  if heard == 0 then
    redis.call('PUBLISH', wake_channel, 'job')
  end
end
return first
