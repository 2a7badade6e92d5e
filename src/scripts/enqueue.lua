-- enqueue: the fenced write of one message by the generator.
--
-- KEYS[1] lease
-- KEYS[2] seq              counter; the message's number is assigned here
-- KEYS[3] queue            list; new messages are pushed on the left, claimed from the right
-- KEYS[4] last enqueue     see acquire_lease
-- ARGV[1] holder value "<epoch>:<copy id>" the caller believes it holds
-- ARGV[2] the message's JSON after its seq field: ',"epoch":...}'
-- ARGV[3] wake channel
-- ARGV[4] last enqueue value "<generated_at_ms> <epoch> <producer>"
--
-- Returns the new seq, or 0 when the caller does not hold the lease (nothing changed).
-- A wake-up is published only when the queue was empty: otherwise every
-- processor is either busy with the queue already or will see it on its poll.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local seq = redis.call('INCR', KEYS[2])
local length = redis.call('LPUSH', KEYS[3], '{"seq":' .. seq .. ARGV[2])
redis.call('SET', KEYS[4], ARGV[4])
if length == 1 then
  redis.call('PUBLISH', ARGV[3], 'job')
end
return seq
