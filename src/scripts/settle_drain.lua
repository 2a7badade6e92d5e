-- settle_drain: forget the errors a get-errors run has written out, the
-- oldest of its draining list (the batch is written oldest first), so that
-- only the `keep` it has not written remain. Idempotent: a settle whose
-- answer was lost and that is sent again forgets nothing more.
--
-- KEYS[1] draining list of the run
-- ARGV[1] keep: how many of the batch are not written yet
--
-- Returns {length before, length after}. A length before that is shorter
-- than the caller expects means the batch had been given back (the run's
-- lock lapsed while it was stopped): those errors are in the errors list
-- again and will be printed again.
local draining = KEYS[1]
local keep = tonumber(ARGV[1])
local refusal = wrong_types(draining, 'list')
if refusal then
  return refusal
end
local before = redis.call('LLEN', draining)
local length = before
while length > keep do
  redis.call('RPOP', draining)
  length = length - 1
end
return {before, length}
