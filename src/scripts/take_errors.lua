-- take_errors: move a batch of errors into one get-errors run's draining list.
--
-- KEYS[1] errors           newest on the left
-- KEYS[2] draining list of the run
-- KEYS[3] lock of the run  string with a TTL, renewed while the run lives
-- KEYS[4] drains           set of the ids of runs that may hold a draining list
-- ARGV[1] run id
-- ARGV[2] batch size
-- ARGV[3] lock TTL in ms
-- ARGV[4] the most bytes a batch holds (at least one error is taken)
--
-- Returns the batch, oldest first. The errors stay in Redis, in the draining
-- list, until the run has written them out and settles them. Every key is
-- checked before the first write.
local errors, draining, lock, drains = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local run_id, batch, lock_ms, max_bytes = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local refusal = wrong_types(errors, 'list', draining, 'list', drains, 'set')
if refusal then
  return refusal
end
redis.call('SET', lock, run_id, 'PX', lock_ms)
redis.call('SADD', drains, run_id)
local out = {}
local bytes = 0
for _ = 1, batch do
  local item = redis.call('RPOPLPUSH', errors, draining)
  if not item then
    break
  end
  out[#out + 1] = item
  bytes = bytes + #item
  if bytes >= max_bytes then
    break
  end
end
return out
