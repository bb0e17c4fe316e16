-- OfflineQueueRepository.ack (ioredis command mqAck); key layout in offline-queue.repository.ts.
--
-- Acks ids of one device's queue. KEYS: z, m, hi, cur; ARGV: conversation key prefix,
-- acked-ahead key prefix, then ids. Returns the acked entries (id, conversation, seq,
-- sender) and, per conversation touched, its new cursor; the cursor and the ids acked
-- past it are recorded in `cur` and `x`.
local prefix, xprefix = ARGV[1], ARGV[2]
local acked = {}
local touched = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local entry = redis.call('HGET', KEYS[2], id)
  if entry then
    local conv, seq, sender = string.match(entry, '^([^|]+)|([^|]+)|(.*)$')
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', prefix .. conv, id)
    table.insert(acked, id)
    table.insert(acked, conv)
    table.insert(acked, seq)
    table.insert(acked, sender)
    local ids = touched[conv]
    if not ids then
      ids = {}
      touched[conv] = ids
    end
    table.insert(ids, tonumber(seq))
    table.insert(ids, id)
  end
end
local cursors = {}
for conv, ids in pairs(touched) do
  local first = redis.call('ZRANGE', prefix .. conv, 0, 0, 'WITHSCORES')
  local cursor
  if #first > 0 then cursor = tonumber(first[2]) - 1 else cursor = tonumber(redis.call('HGET', KEYS[3], conv) or '0') end
  redis.call('HSET', KEYS[4], conv, cursor)
  local ahead = {}
  for j = 1, #ids, 2 do
    if ids[j] > cursor then
      table.insert(ahead, ids[j])
      table.insert(ahead, ids[j + 1])
    end
  end
  if #ahead > 0 then redis.call('ZADD', xprefix .. conv, unpack(ahead)) end
  redis.call('ZREMRANGEBYSCORE', xprefix .. conv, '-inf', cursor)
  table.insert(cursors, conv)
  table.insert(cursors, tostring(cursor))
end
return { acked, cursors }
