-- ack: commit the result of one message in the same step that releases it.
--
-- KEYS[1] processing list of the copy that claimed the message
-- KEYS[2] processed        counter of all processed messages
-- KEYS[3] errors           list of error records, newest on the left
-- KEYS[4] errors total     counter of all error records ever stored
-- KEYS[5] dead             dead-letter list, newest on the left
-- ARGV[1] the item exactly as claimed
-- ARGV[2] outcome: 'ok', 'error' or 'dead'
-- ARGV[3] the error record or the dead-letter record ('' for 'ok')
--
-- Returns 1 when committed, 0 when refused: the item is no longer in the
-- list (the janitor gave it back to the queue), and nothing changed.
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
  return 0
end
if ARGV[2] == 'dead' then
  redis.call('LPUSH', KEYS[5], ARGV[3])
  return 1
end
redis.call('INCR', KEYS[2])
if ARGV[2] == 'error' then
  redis.call('LPUSH', KEYS[3], ARGV[3])
  redis.call('INCR', KEYS[4])
end
return 1
