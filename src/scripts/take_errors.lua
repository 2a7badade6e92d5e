-- take_errors: move a batch of errors into one get-errors run's draining list.
--
-- KEYS[1] errors           newest on the left
-- KEYS[2] draining list of the run
-- KEYS[3] lock of the run  string with a TTL; while it lives the run is alive
-- KEYS[4] drains           set of the ids of runs that may hold a draining list
-- ARGV[1] run id
-- ARGV[2] batch size
-- ARGV[3] lock TTL in ms
--
-- Returns the batch, oldest first. The errors stay in Redis, in the draining
-- list, until the run has written them out and deletes that list.
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
redis.call('SADD', KEYS[4], ARGV[1])
local out = {}
for _ = 1, tonumber(ARGV[2]) do
  local item = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if not item then
    break
  end
  out[#out + 1] = item
end
return out
