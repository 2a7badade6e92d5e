-- prelude: put in front of every script. A script checks every key it will
-- write before its first write, because Redis does not roll back a script
-- that fails half-way; a key of the wrong type (another program wrote it)
-- is refused with a WRONGTYPE error that names the key and changes nothing.
--
-- A script that declines, changing nothing, answers with a status reply
-- that names why, one of: NOT_HOLDER (the caller does not hold the lease or
-- lock), QUEUE_FULL, TOO_SOON, NOT_REGISTERED (the copy's heartbeat is
-- gone), ALIVE (the copy or get-errors run is still alive). Every other
-- answer is the script's data; `scripts::Refused` is the Rust side of this list.

-- The reply to return when `key` holds something other than `kind` ('list',
-- 'hash', 'set', 'string', or 'counter': absent or an integer string); nil
-- when it is absent or of that kind.
local function wrong_type(key, kind)
  if kind == 'counter' then
    local ok, value = pcall(redis.call, 'GET', key)
    if not ok then
      return redis.error_reply('WRONGTYPE ' .. key .. ' is not a string; redis-ql keeps a counter there')
    end
    -- Lua numbers are doubles: a counter must stay below 2^53 to count exactly.
    if value and not (string.match(value, '^%d+$') and #value <= 15) then
      return redis.error_reply('WRONGTYPE ' .. key .. ' is not an integer from 0 to 10^15; redis-ql keeps a counter there')
    end
    return nil
  end
  local found = redis.call('TYPE', key)
  found = found['ok'] or found
  if found ~= 'none' and found ~= kind then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. found .. '; redis-ql keeps a ' .. kind .. ' there')
  end
  return nil
end

-- The value of the string `key` (false when absent), or nil and the refusal
-- that names it when it holds something else.
local function get_string(key)
  local ok, value = pcall(redis.call, 'GET', key)
  if ok then
    return value, nil
  end
  return nil, wrong_type(key, 'string')
end

-- The first refusal among (key, kind) pairs, or nil when all are right.
local function wrong_types(...)
  local pairs = {...}
  for i = 1, #pairs, 2 do
    local refusal = wrong_type(pairs[i], pairs[i + 1])
    if refusal then
      return refusal
    end
  end
  return nil
end

-- The refusal to return when this user's ACL forbids one of `calls` (each
-- {command, key, args...}), or nil. A command refused half-way through a
-- script would leave its earlier writes in place, so a script asks before
-- its first write; Redis 7 and later can tell (redis.acl_check_cmd), and
-- before that the README's ACL line is what keeps every command allowed.
local function denied(...)
  if not redis.acl_check_cmd then
    return nil
  end
  for _, call in ipairs({...}) do
    if not redis.acl_check_cmd(unpack(call)) then
      return redis.error_reply('NOPERM this user may not run ' .. call[1] .. ' on ' .. call[2] .. '; redis-ql needs the commands of the ACL line in its README')
    end
  end
  return nil
end

-- A dead-letter record: why, how big the item was, and the item itself, or
-- only its first `keep` bytes (cut on a UTF-8 character boundary) when it is
-- longer. Built here so that the item never travels back over the network.
local function dead_record(reason, item, keep)
  local record = {reason = reason, bytes = #item}
  if #item > keep then
    local cut = keep
    while cut > 0 and string.byte(item, cut + 1) >= 128 and string.byte(item, cut + 1) < 192 do
      cut = cut - 1
    end
    record.item = string.sub(item, 1, cut)
    record.truncated = true
  else
    record.item = item
  end
  return cjson.encode(record)
end


-- The decoded message when `item` is one (a JSON object with a numeric
-- seq), else nil. Never re-encoded: cjson cannot encode every number it
-- decodes, and would change others.
local function as_message(item)
  if string.sub(item, 1, 1) ~= '{' then
    return nil
  end
  local ok, msg = pcall(cjson.decode, item)
  if ok and type(msg) == 'table' and type(msg.seq) == 'number' then
    return msg
  end
  return nil
end

-- The delivery count of a message, and the item without it. The count is a
-- field written at the front, '{"deliveries":N,', by reclaim; an item
-- written by an earlier version may have it anywhere.
local function deliveries_of(item, msg)
  local n, rest = string.match(item, '^{"deliveries":(%d+),(.*)$')
  if n then
    return tonumber(n), '{' .. rest
  end
  local without = string.gsub(item, ',"deliveries":%-?%d+', '', 1)
  return tonumber(msg.deliveries) or 0, without
end
