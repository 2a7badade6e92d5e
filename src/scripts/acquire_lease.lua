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
-- replicates verbatim on Redis 3.2 too. Everything is read before the first
-- write (INCR), so a key of the wrong type changes nothing.
local lease, epoch_key, last_enqueue = KEYS[1], KEYS[2], KEYS[3]
local copy_id, lease_ms = ARGV[1], ARGV[2]
local holder, lease_refusal = get_string(lease)
if lease_refusal then
  return lease_refusal
end
if holder then
  return {0, redis.call('PTTL', lease), holder}
end
local refusal = wrong_types(epoch_key, 'counter', last_enqueue, 'string')
if refusal then
  return refusal
end
local last = redis.call('GET', last_enqueue) or ''
local epoch = redis.call('INCR', epoch_key)
redis.call('SET', lease, string.format('%d', epoch) .. ':' .. copy_id, 'PX', lease_ms)
return {1, epoch, last}
