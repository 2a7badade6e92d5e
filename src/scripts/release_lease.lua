-- release_lease: give the lease up at once and tell the other copies.
--
-- KEYS[1] lease
-- ARGV[1] holder value "<epoch>:<copy id>"
-- ARGV[2] lease channel, on which waiting copies hear that it is free
--
-- Returns 1 when released, NOT_HOLDER when the caller did not hold it
-- (nothing changed).
local lease = KEYS[1]
local holder, lease_channel = ARGV[1], ARGV[2]
local current, refusal = get_string(lease)
if refusal then
  return refusal
end
if current ~= holder then
  return redis.status_reply('NOT_HOLDER')
end
redis.call('DEL', lease)
redis.call('PUBLISH', lease_channel, 'free')
return 1
