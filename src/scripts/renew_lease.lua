-- renew_lease: extend the lease, but only for the holder of this exact epoch.
--
-- KEYS[1] lease
-- ARGV[1] holder value "<epoch>:<copy id>" as written by acquire_lease
-- ARGV[2] lease length in ms
--
-- Returns 1 when extended, 0 when the caller no longer holds the lease.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
