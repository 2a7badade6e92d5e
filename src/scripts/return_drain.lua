-- return_drain: put the errors of a get-errors run that died (or whose output
-- failed) back on the errors list, at the end that is taken next.
--
-- KEYS[1] lock of the run
-- KEYS[2] draining list of the run
-- KEYS[3] errors
-- KEYS[4] drains
-- ARGV[1] run id
--
-- Returns how many errors went back, or -1 when the run's lock exists (the
-- run is alive: nothing changed).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local n = 0
while true do
  local item = redis.call('LPOP', KEYS[2])
  if not item then
    break
  end
  redis.call('RPUSH', KEYS[3], item)
  n = n + 1
end
redis.call('SREM', KEYS[4], ARGV[1])
return n
