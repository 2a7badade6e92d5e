-- enqueue: the fenced write of one message (or, at --interval-ms 0, of a
-- batch) by the generator.
--
-- KEYS[1] lease
-- KEYS[2] seq              counter; the messages' numbers are assigned here
-- KEYS[3] queue            list; new messages are pushed on the left, claimed from the right
-- KEYS[4] last enqueue     see acquire_lease
-- ARGV[1] holder value "<epoch>:<copy id>" the caller believes it holds
-- ARGV[2] wake channel
-- ARGV[3] last enqueue value "<generated_at_ms> <epoch> <producer>"
-- ARGV[4] queue cap: when the queue already holds this many, write nothing (0: no cap)
-- ARGV[5..] each message's JSON after its seq field: ',"epoch":...}'
--
-- Returns the seq of the first message (the others follow it in order),
-- 0 when the caller does not hold the lease, -1 when the queue is at its
-- cap; in both of those cases nothing changed.
-- A wake-up is published only when the queue was empty: otherwise every
-- processor is either busy with the queue already or will see it on its poll.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local cap = tonumber(ARGV[4])
if cap > 0 and redis.call('LLEN', KEYS[3]) >= cap then
  return -1
end
local n = #ARGV - 4
local first = redis.call('INCRBY', KEYS[2], n) - n + 1
local items = {}
for i = 1, n do
  items[i] = '{"seq":' .. (first + i - 1) .. ARGV[4 + i]
end
local length = redis.call('LPUSH', KEYS[3], unpack(items))
redis.call('SET', KEYS[4], ARGV[3])
if length == n then
  redis.call('PUBLISH', ARGV[2], 'job')
end
return first
