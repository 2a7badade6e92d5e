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
-- ARGV[3] description JSON, or '' when it has not changed since the copy last wrote it
-- ARGV[4] janitor period in ms
-- ARGV[5] 'register' for a new copy id, 'beat' afterwards
-- ARGV[6] '1' to check that the janitor lock belongs to a registered copy
--         (now and then: a lock another program set without expiry would
--         otherwise give nobody the turn, for ever)
-- ARGV[7] '1' to read the length of the processing list, '0' to answer -1
--         for it (the copy looks every other beat)
--
-- Returns {janitor turn, queue length, processing length, problem, janitor
-- lock held by no registered copy (0/1)}, or NOT_REGISTERED when a beat finds
-- the heartbeat gone or another's (the copy must register a new id).
-- alive = 0 means the heartbeat had already expired, or holds something else
-- than this copy's id: the janitor may have taken the copy's messages back,
-- so it must re-register under a new id; nothing changed in that case. A length is -1 when its key is of the wrong
-- type, and problem then names the key ('' when all is well): the copy stays
-- alive (it still holds its messages) and says what is wrong.
local heartbeat, registry, janitor, queue, processing = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local copy_id, ttl_ms, description, janitor_ms, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local check_janitor = ARGV[6] == '1'
local problem = ''
-- The text of a refusal, or a plain note when the failure was another one.
local function named(refusal, key)
  if refusal then
    return refusal['err']
  end
  return 'cannot use ' .. key
end
-- Reads first, each named if its key is of the wrong type; the heartbeat
-- itself is kept whatever else is wrong, so the copy keeps what it holds.
local function length_of(list)
  local ok, length = pcall(redis.call, 'LLEN', list)
  if ok then
    return length
  end
  problem = named(wrong_type(list, 'list'), list)
  return -1
end
local queue_len = length_of(queue)
local processing_len = -1
if ARGV[7] == '1' then
  processing_len = length_of(processing)
end
if mode == 'register' then
  redis.call('SET', heartbeat, copy_id, 'PX', ttl_ms)
else
  local ok, beating = pcall(redis.call, 'GET', heartbeat)
  if not (ok and beating == copy_id) then
    return redis.status_reply('NOT_REGISTERED')
  end
  redis.call('PEXPIRE', heartbeat, ttl_ms)
end
local registered = true
if description ~= '' then
  registered = pcall(redis.call, 'HSET', registry, copy_id, description)
  if not registered then
    problem = named(wrong_type(registry, 'hash'), registry)
  end
end
local turn, orphaned = 0, 0
if redis.call('SET', janitor, copy_id, 'NX', 'PX', janitor_ms) then
  turn = 1
elseif check_janitor then
  -- A lock of another type, or one held by no registered copy (set by
  -- another program, with no expiry), would give nobody the turn for ever:
  -- then every copy runs the janitor, which two passes at once do no harm.
  local ok, holder = pcall(redis.call, 'GET', janitor)
  if not ok then
    problem = named(wrong_type(janitor, 'string'), janitor)
    turn = 1
  elseif holder and registered and redis.call('HEXISTS', registry, holder) == 0 then
    turn, orphaned = 1, 1
  end
end
return {turn, queue_len, processing_len, problem, orphaned}
