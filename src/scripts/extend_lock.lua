-- extend_lock: extend a lock (the generator lease, or a get-errors run's
-- lock), but only for the holder that set it.
--
-- KEYS[1] the lock          string with an expiry
-- ARGV[1] the holder value  as the lock was set (for the lease "<epoch>:<copy id>")
-- ARGV[2] new length in ms
--
-- Returns 1 when extended, NOT_HOLDER when the caller no longer holds it
-- (nothing changed); a lock of the wrong type is refused by name.
local lock = KEYS[1]
local holder, length_ms = ARGV[1], ARGV[2]
local current, refusal = get_string(lock)
if refusal then
  return refusal
end
if current == holder then
  redis.call('PEXPIRE', lock, length_ms)
  return 1
end
return redis.status_reply('NOT_HOLDER')
