-- purge_dead: delete the oldest records of the dead-letter list
-- (`app dead purge`).
--
-- KEYS[1] dead             dead-letter list, newest on the left
-- ARGV[1] how many records to delete: those counted when the user was asked,
--         so that a record that arrived since is kept
--
-- Returns how many records were deleted.
local dead, count = KEYS[1], tonumber(ARGV[1])
local refusal = wrong_type(dead, 'list')
if refusal then
  return refusal
end
local deleted = math.min(count, redis.call('LLEN', dead))
if deleted > 0 then
  redis.call('LTRIM', dead, 0, -(deleted + 1))
end
return deleted
