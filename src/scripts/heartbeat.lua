-- heartbeat: keep a copy alive, publish its description, and hand out the
-- janitor's turn, the queue length and the length of the copy's own
-- processing list, so one call a second does all of it.
--
-- KEYS[1] heartbeat of the copy   string with a TTL of a few beats
-- KEYS[2] registry                hash copy id -> description JSON
-- KEYS[3] janitor lock            string, held for one janitor period
-- KEYS[4] queue
-- KEYS[5] processing list of the copy
-- ARGV[1] copy id
-- ARGV[2] heartbeat TTL in ms
-- ARGV[3] description JSON
-- ARGV[4] janitor period in ms
-- ARGV[5] 'register' for a new copy id, 'beat' afterwards
--
-- Returns {alive, janitor turn, queue length, processing length, problem}.
-- alive = 0 means the heartbeat had already expired: the janitor may have
-- taken the copy's messages back, so it must re-register under a new id;
-- nothing changed in that case. A length is -1 when its key is of the wrong
-- type, and problem then names the key ('' when all is well): the copy stays
-- alive (it still holds its messages) and says what is wrong.
local heartbeat, registry, janitor, queue, processing = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local copy_id, ttl_ms, description, janitor_ms, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local problem = ''
local function length_of(list)
  local refusal = wrong_type(list, 'list')
  if refusal then
    problem = refusal['err']
    return -1
  end
  return redis.call('LLEN', list)
end
local queue_len = length_of(queue)
local processing_len = length_of(processing)
local registry_refusal = wrong_type(registry, 'hash')
if registry_refusal then
  problem = registry_refusal['err']
end
-- A janitor lock of another type would silently give nobody the turn.
local janitor_refusal = wrong_type(janitor, 'string')
if janitor_refusal then
  problem = janitor_refusal['err']
end
if mode == 'register' then
  redis.call('SET', heartbeat, copy_id, 'PX', ttl_ms)
elseif redis.call('PEXPIRE', heartbeat, ttl_ms) == 0 then
  return {0, 0, 0, 0, ''}
end
if not registry_refusal then
  redis.call('HSET', registry, copy_id, description)
end
local turn = 0
if redis.call('SET', janitor, copy_id, 'NX', 'PX', janitor_ms) then
  turn = 1
end
return {1, turn, queue_len, processing_len, problem}
