-- heartbeat: keep a copy alive, publish its description, and hand out the
-- janitor's turn and the queue length, so one call a second does all three.
--
-- KEYS[1] heartbeat of the copy   string with a TTL of a few beats
-- KEYS[2] registry                hash copy id -> description JSON
-- KEYS[3] janitor lock            string, held for one janitor period
-- KEYS[4] queue
-- ARGV[1] copy id
-- ARGV[2] heartbeat TTL in ms
-- ARGV[3] description JSON
-- ARGV[4] janitor period in ms
-- ARGV[5] 'register' for a new copy id, 'beat' afterwards
--
-- Returns {alive, janitor turn, queue length}. alive = 0 means the heartbeat
-- had already expired: the janitor may have taken the copy's messages back,
-- so it must re-register under a new id. Nothing changed in that case.
if ARGV[5] == 'register' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif redis.call('PEXPIRE', KEYS[1], ARGV[2]) == 0 then
  return {0, 0, 0}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local turn = 0
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[4]) then
  turn = 1
end
return {1, turn, redis.call('LLEN', KEYS[4])}
