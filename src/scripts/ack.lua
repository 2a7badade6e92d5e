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
-- Every key is checked before the first write, so a key of the wrong type
-- refuses the whole call and changes nothing. A dead-letter record is built
-- here, from the item itself, so that a hostile item is kept byte for byte
-- and never sent twice.
--
-- Each item is removed as `LREM processing -1 item` would remove it (its
-- occurrence nearest the right end), but without one command per item: the
-- right end of the list, where the oldest claims wait, is read once, the
-- acked items are taken out of it, and it is written back with at most two
-- commands. Only an item not found there costs an LREM of its own.
local processing, processed_key, errors_key, errors_total, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local count = #ARGV / 3
local checks = {processed_key, 'counter'}
local allowed = {{'ltrim', processing, '0', '0'}, {'rpush', processing, 'x'}, {'lrem', processing, '0', 'x'}, {'incrby', processed_key, '1'}}
local seen = {}
for i = 2, #ARGV, 3 do
  local outcome = ARGV[i]
  if not seen[outcome] then
    seen[outcome] = true
    if outcome == 'error' then
      table.insert(checks, errors_key); table.insert(checks, 'list')
      table.insert(checks, errors_total); table.insert(checks, 'counter')
      table.insert(allowed, {'lpush', errors_key, 'x'}); table.insert(allowed, {'incrby', errors_total, '1'})
    elseif outcome == 'dead' then
      table.insert(checks, dead); table.insert(checks, 'list')
      table.insert(allowed, {'lpush', dead, 'x'})
    end
  end
end
local refusal = wrong_types(unpack(checks)) or denied(unpack(allowed))
if refusal then
  return refusal
end
local read, window = pcall(redis.call, 'LRANGE', processing, -(2 * count + 16), -1)
if not read then
  return wrong_type(processing, 'list')
end
local width = #window
-- Where each value sits in the window, nearest the right end first.
local at, next_at = {}, {}
for i = width, 1, -1 do
  local places = at[window[i]]
  if not places then
    places = {}
    at[window[i]] = places
    next_at[window[i]] = 1
  end
  places[#places + 1] = i
end
local taken, leftmost = {}, width + 1
local committed, outside = {}, {}
for k = 1, count do
  local item = ARGV[3 * k - 2]
  local places = at[item]
  local place = places and places[next_at[item]]
  if place then
    next_at[item] = next_at[item] + 1
    taken[place] = true
    if place < leftmost then
      leftmost = place
    end
    committed[k] = true
  else
    outside[#outside + 1] = k
  end
end
if leftmost <= width then
  -- Cut the window from its leftmost taken item, and put back what it kept
  -- to the right of that item, in order.
  redis.call('LTRIM', processing, 0, leftmost - width - 2)
  local kept = {}
  for i = leftmost + 1, width do
    if not taken[i] then
      kept[#kept + 1] = window[i]
    end
  end
  if #kept > 0 then
    redis.call('RPUSH', processing, unpack(kept))
  end
end
for _, k in ipairs(outside) do
  committed[k] = redis.call('LREM', processing, -1, ARGV[3 * k - 2]) == 1
end
local answers, records, deaths = {}, {}, {}
local processed = 0
for k = 1, count do
  if committed[k] then
    answers[k] = 1
    local item, outcome, payload = ARGV[3 * k - 2], ARGV[3 * k - 1], ARGV[3 * k]
    if outcome == 'dead' then
      deaths[#deaths + 1] = dead_record(payload, item, #item)
    else
      processed = processed + 1
      if outcome == 'error' then
        records[#records + 1] = payload
      end
    end
  else
    answers[k] = 0
  end
end
if processed > 0 then
  redis.call('INCRBY', processed_key, processed)
end
if #records > 0 then
  redis.call('LPUSH', errors_key, unpack(records))
  redis.call('INCRBY', errors_total, #records)
end
if #deaths > 0 then
  redis.call('LPUSH', dead, unpack(deaths))
end
return answers
