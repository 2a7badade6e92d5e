-- acquire_lease: take the generator lease if nobody holds it.
--
-- KEYS[1] lease            string "<epoch>:<copy id>", with the lease's expiry
-- KEYS[2] epoch            counter, INCR-ed on every acquisition (the fencing token)
-- KEYS[3] last enqueue     string "<generated_at_ms> <epoch> <producer>" of the newest message
-- ARGV[1] copy id
-- ARGV[2] lease length in ms
--
-- Returns {1, epoch, last enqueue or ""} when taken,
--         {0, ms left on the lease, holder} when someone holds it.
-- PTTL is only read on the branch that writes nothing, so the script
-- replicates verbatim on Redis 3.2 too.
local holder = redis.call('GET', KEYS[1])
if holder then
  return {0, redis.call('PTTL', KEYS[1]), holder}
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ':' .. ARGV[1], 'PX', ARGV[2])
return {1, epoch, redis.call('GET', KEYS[3]) or ''}
