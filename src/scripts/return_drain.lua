-- return_drain: put the errors of a get-errors run that died (or whose output
-- failed) back on the errors list, at the end that is taken next.
--
-- KEYS[1] lock of the run
-- KEYS[2] draining list of the run
-- KEYS[3] errors
-- KEYS[4] drains
-- ARGV[1] run id
--
-- Returns how many errors went back, or ALIVE when the run's lock holds its
-- id (nothing changed). Every key is checked before the first write.
local lock, draining, errors, drains = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local run_id = ARGV[1]
local locked_ok, locker = pcall(redis.call, 'GET', lock)
if locked_ok and locker == run_id then
  return redis.status_reply('ALIVE')
end
local refusal = wrong_types(draining, 'list', errors, 'list', drains, 'set')
if refusal then
  return refusal
end
local n = 0
while true do
  local item = redis.call('LPOP', draining)
  if not item then
    break
  end
  redis.call('RPUSH', errors, item)
  n = n + 1
end
redis.call('SREM', drains, run_id)
return n
