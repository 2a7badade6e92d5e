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
--           the error record for 'error', the reason for 'dead', '' for 'ok'
--
-- Returns one number per message: 1 committed, 0 refused. Refused means the
-- item is no longer in the list (the janitor gave it back, or an earlier try
-- of this ack committed it): nothing changed for that message.
-- Every key is checked before the first LREM, so a key of the wrong type
-- refuses the whole call and changes nothing. A dead-letter record is built
-- here, from the item itself, so that a hostile item is kept byte for byte
-- and never sent twice.
local processing, processed_key, errors_key, errors_total, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local checks = {processing, 'list', processed_key, 'counter'}
local seen = {}
for i = 2, #ARGV, 3 do
  local outcome = ARGV[i]
  if not seen[outcome] then
    seen[outcome] = true
    if outcome == 'error' then
      table.insert(checks, errors_key); table.insert(checks, 'list')
      table.insert(checks, errors_total); table.insert(checks, 'counter')
    elseif outcome == 'dead' then
      table.insert(checks, dead); table.insert(checks, 'list')
    end
  end
end
local refusal = wrong_types(unpack(checks))
if refusal then
  return refusal
end
local answers = {}
local processed, errors = 0, 0
for i = 1, #ARGV, 3 do
  local item, outcome, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('LREM', processing, -1, item) == 0 then
    answers[#answers + 1] = 0
  else
    answers[#answers + 1] = 1
    if outcome == 'dead' then
      redis.call('LPUSH', dead, dead_record(payload, item, #item))
    else
      processed = processed + 1
      if outcome == 'error' then
        redis.call('LPUSH', errors_key, payload)
        errors = errors + 1
      end
    end
  end
end
if processed > 0 then
  redis.call('INCRBY', processed_key, processed)
end
if errors > 0 then
  redis.call('INCRBY', errors_total, errors)
end
return answers
