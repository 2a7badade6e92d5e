-- reclaim: give a dead (or departing) copy's messages back to the queue and
-- forget the copy.
--
-- KEYS[1] heartbeat of the copy
-- KEYS[2] processing list of the copy
-- KEYS[3] registry
-- KEYS[4] queue
-- KEYS[5] dead
-- ARGV[1] copy id
-- ARGV[2] max deliveries
-- ARGV[3] wake channel
-- ARGV[4] '1' when each return counts as a delivery (the copy died), '0'
--         when the copy is giving back what it did not start (shutdown)
--
-- Returns {returned to the queue, dead-lettered}, or {-1, 0} when the copy's
-- heartbeat exists (it is alive: nothing changed). Idempotent: a second call
-- finds an empty list and an absent registry entry.
-- Messages go back to the right end of the queue, the end claimed next, the
-- oldest claim last so that it is claimed first. A message delivered
-- max-deliveries times goes to dead-letter instead.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {-1, 0}
end
local max = tonumber(ARGV[2])
local back, dead = 0, 0
while true do
  local item = redis.call('LPOP', KEYS[2])
  if not item then
    break
  end
  local ok, msg = pcall(cjson.decode, item)
  if ok and type(msg) == 'table' and type(msg.seq) == 'number' then
    if ARGV[4] == '1' then
      msg.deliveries = (tonumber(msg.deliveries) or 0) + 1
    end
    if (tonumber(msg.deliveries) or 0) >= max then
      redis.call('LPUSH', KEYS[5], cjson.encode({
        reason = 'delivered ' .. msg.deliveries .. ' times without an ack',
        item = cjson.encode(msg)}))
      dead = dead + 1
    else
      redis.call('RPUSH', KEYS[4], cjson.encode(msg))
      back = back + 1
    end
  else
    redis.call('LPUSH', KEYS[5], cjson.encode({reason = 'not a valid message', item = item}))
    dead = dead + 1
  end
end
redis.call('HDEL', KEYS[3], ARGV[1])
if back > 0 then
  redis.call('PUBLISH', ARGV[3], 'job')
end
return {back, dead}
