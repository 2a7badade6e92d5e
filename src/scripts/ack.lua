-- ack: commit the results of messages in the same step that releases them.
--
-- KEYS[1] processing list of the copy that claimed the messages
-- KEYS[2] processed        counter of all processed messages
-- KEYS[3] errors           list of error records, newest on the left
-- KEYS[4] errors total     counter of all error records ever stored
-- KEYS[5] dead             dead-letter list, newest on the left
-- ARGV    three values per message:
--           the item exactly as claimed,
--           the outcome: 'ok', 'error' or 'dead',
--           the error record or the dead-letter record ('' for 'ok')
--
-- Returns one number per message: 1 committed, 0 refused. Refused means the
-- item is no longer in the list (the janitor gave it back, or an earlier try
-- of this ack committed it): nothing changed for that message.
local answers = {}
local processed, errors = 0, 0
for i = 1, #ARGV, 3 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 0 then
    answers[#answers + 1] = 0
  else
    answers[#answers + 1] = 1
    local outcome = ARGV[i + 1]
    if outcome == 'dead' then
      redis.call('LPUSH', KEYS[5], ARGV[i + 2])
    else
      processed = processed + 1
      if outcome == 'error' then
        redis.call('LPUSH', KEYS[3], ARGV[i + 2])
        errors = errors + 1
      end
    end
  end
end
if processed > 0 then
  redis.call('INCRBY', KEYS[2], processed)
end
if errors > 0 then
  redis.call('INCRBY', KEYS[4], errors)
end
return answers
