-- OfflineQueueRepository.enqueueForDevices (ioredis command mqEnqueueMany); key layout in offline-queue.repository.ts.
--
-- Adds entries to many devices' queues in one call (a group commit's messages fanned out
-- to a group): KEYS each device's key tag (`mq:{user device}`: its keys are the tag plus
-- a suffix, so they share its slot); ARGV mode, cap, then (id, score, conversation, seq,
-- sender) per entry. An entry already queued is left alone; the new ones go in with one
-- HSET and one ZADD per conversation per device. Past the cap the oldest entries go.
-- Returns the dropped entries as (device index, conversation, seq).
--
-- The tags are declared as KEYS so that a Redis Cluster routes the call and checks them:
-- in a cluster every tag of one call must hash to one slot (the caller groups by slot).
--
-- Mode 'repair' (a rebuild from PostgreSQL) skips what the device already acked (at or
-- below its cursor, or in `x`) and rewrites each entry into all three structures, so a
-- queue that lost any of them is whole again.
local repair = ARGV[1] == 'repair'
local cap = tonumber(ARGV[2])
local devices = #KEYS
local ids, scores, convs, seqs, values, highest = {}, {}, {}, {}, {}, {}
local n = 0
for i = 3, #ARGV, 5 do
  n = n + 1
  ids[n], scores[n], convs[n], seqs[n] = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  values[n] = ARGV[i+2] .. '|' .. ARGV[i+3] .. '|' .. ARGV[i+4]
end
local dropped = {}
for d = 1, devices do
  local tag = KEYS[d]
  local z, m, hi, cur, prefix, xprefix = tag .. ':z', tag .. ':m', tag .. ':hi', tag .. ':cur', tag .. ':c:', tag .. ':x:'
  local fields, perConv = {}, {}
  local top = {}
  for j = 1, n do
    local add
    if repair then
      local seq = tonumber(seqs[j])
      add = seq > tonumber(redis.call('HGET', cur, convs[j]) or '0')
        and not redis.call('ZSCORE', xprefix .. convs[j], ids[j])
      if add then redis.call('ZADD', z, 'NX', scores[j], ids[j]) end
    else
      add = redis.call('ZADD', z, 'NX', scores[j], ids[j]) == 1
    end
    if add then
      table.insert(fields, ids[j])
      table.insert(fields, values[j])
      local members = perConv[convs[j]]
      if not members then
        members = {}
        perConv[convs[j]] = members
      end
      table.insert(members, seqs[j])
      table.insert(members, ids[j])
      local seq = tonumber(seqs[j])
      if not top[convs[j]] or seq > top[convs[j]] then top[convs[j]] = seq end
    end
  end
  if #fields > 0 then
    redis.call('HSET', m, unpack(fields))
    for conv, members in pairs(perConv) do
      redis.call('ZADD', prefix .. conv, unpack(members))
      local high = tonumber(redis.call('HGET', hi, conv) or '0')
      if top[conv] > high then redis.call('HSET', hi, conv, top[conv]) end
    end
  end
  local size = redis.call('ZCARD', z)
  if size > cap then
    local popped = redis.call('ZPOPMIN', z, size - cap)
    local touched = {}
    for j = 1, #popped, 2 do
      local id = popped[j]
      local entry = redis.call('HGET', m, id)
      if entry then
        local conv, seq = string.match(entry, '^([^|]+)|([^|]+)|')
        redis.call('HDEL', m, id)
        redis.call('ZREM', prefix .. conv, id)
        touched[conv] = true
        table.insert(dropped, d)
        table.insert(dropped, conv)
        table.insert(dropped, seq)
      end
    end
    -- Dropped entries count as acked: the cursor moves past them, as in PostgreSQL.
    for conv, _ in pairs(touched) do
      local first = redis.call('ZRANGE', prefix .. conv, 0, 0, 'WITHSCORES')
      local cursor
      if #first > 0 then cursor = tonumber(first[2]) - 1 else cursor = tonumber(redis.call('HGET', hi, conv) or '0') end
      redis.call('HSET', cur, conv, cursor)
      redis.call('ZREMRANGEBYSCORE', xprefix .. conv, '-inf', cursor)
    end
  end
end
return dropped
