-- release_lease: give the lease up at once and tell the other copies.
--
-- KEYS[1] lease
-- ARGV[1] holder value "<epoch>:<copy id>"
-- ARGV[2] lease channel, on which waiting copies hear that it is free
--
-- Returns 1 when released, 0 when the caller did not hold it (nothing changed).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], 'free')
return 1
