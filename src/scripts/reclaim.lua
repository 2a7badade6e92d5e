-- reclaim: give a dead (or departing) copy's messages back to the queue and
-- forget the copy.
--
-- KEYS[1] heartbeat of the copy (holds the copy id)
-- KEYS[2] processing list of the copy
-- KEYS[3] registry
-- KEYS[4] queue
-- KEYS[5] dead
-- ARGV[1] copy id
-- ARGV[2] max deliveries
-- ARGV[3] wake channel
-- ARGV[4] 'dead': the janitor reclaims a copy whose heartbeat is gone; each
--         return counts as a delivery. 'leaving': the copy itself leaves
--         (shutdown): its heartbeat is deleted too, in the same step, and
--         what it gives back did not start, so it counts no delivery.
--
-- Returns {returned to the queue, dead-lettered}, or (for 'dead') ALIVE when
-- the copy's heartbeat holds its id, NOT_REGISTERED when the copy is gone
-- already, holding nothing (it left, or another pass reclaimed it, between
-- the janitor's look and this call): nothing changed, and no dead copy is
-- reported. Idempotent: a second call
-- finds an empty list and an absent registry entry.
-- Messages go back to the right end of the queue, the end claimed next, the
-- oldest claim last so that it is claimed first. A message delivered
-- max-deliveries times goes to dead-letter instead, and so does an item that
-- is not a message.
-- A message is never decoded and encoded again (cjson cannot encode every
-- number it decodes, and would change others): its delivery count is a
-- field written at its front, '{"deliveries":N,', and only that is rewritten.
-- Every key is checked before the first write.
local heartbeat, processing, registry, queue, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local copy_id, max, wake_channel, leaving = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == 'leaving'
local counts = not leaving
-- Alive while its heartbeat holds its id (something else there, written by
-- another program, keeps no copy alive).
local beating_ok, beating = pcall(redis.call, 'GET', heartbeat)
if not leaving and beating_ok and beating == copy_id then
  return redis.status_reply('ALIVE')
end
local refusal = wrong_types(processing, 'list', registry, 'hash', queue, 'list', dead, 'list')
if refusal then
  return refusal
end
if not leaving and redis.call('HEXISTS', registry, copy_id) == 0 and redis.call('LLEN', processing) == 0 then
  return redis.status_reply('NOT_REGISTERED')
end
if leaving then
  redis.call('DEL', heartbeat)
end
local back, dead_count = 0, 0
while true do
  local item = redis.call('LPOP', processing)
  if not item then
    break
  end
  local msg = as_message(item)
  if msg then
    local n, rest = deliveries_of(item, msg)
    if counts then
      n = n + 1
    end
    if n >= max then
      redis.call('LPUSH', dead, dead_record('delivered ' .. n .. ' times without an ack', item, #item))
      dead_count = dead_count + 1
    else
      if n > 0 then
        item = '{"deliveries":' .. string.format('%d', n) .. ',' .. string.sub(rest, 2)
      end
      redis.call('RPUSH', queue, item)
      back = back + 1
    end
  else
    redis.call('LPUSH', dead, dead_record('not a valid message', item, #item))
    dead_count = dead_count + 1
  end
end
redis.call('HDEL', registry, copy_id)
if back > 0 then
  redis.call('PUBLISH', wake_channel, 'job')
end
return {back, dead_count}
