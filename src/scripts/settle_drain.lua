-- settle_drain: forget the errors a get-errors run has written out: the
-- oldest `n` of its draining list (the batch is written oldest first).
--
-- KEYS[1] draining list of the run
-- ARGV[1] how many were written
--
-- Returns how many were still there to forget. Fewer than ARGV[1] means the
-- batch had been given back (the run's lock lapsed while it was stopped):
-- those errors are in the errors list again and will be printed again.
local draining = KEYS[1]
local written = tonumber(ARGV[1])
local refusal = wrong_types(draining, 'list')
if refusal then
  return refusal
end
local n = 0
for _ = 1, written do
  if not redis.call('RPOP', draining) then
    break
  end
  n = n + 1
end
return n
