-- OfflineQueueRepository.peekIfSynced (ioredis command mqPeekSynced); key layout in offline-queue.repository.ts.
--
-- A device's oldest entries, its queue length and its epoch, in one round trip. KEYS:
-- device epoch, queue ZSET, entries HASH (one device's keys: one slot); ARGV: limit.
-- Returns {device epoch ('' if none), length, id, entry, id, entry, ...} oldest first
-- ('' for an id without its entry). The caller uses the page only if the device epoch is
-- the global one (read apart: it lives in another slot).
local ids = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)
local out = {redis.call('GET', KEYS[1]) or '', redis.call('ZCARD', KEYS[2])}
if #ids > 0 then
  local entries = redis.call('HMGET', KEYS[3], unpack(ids))
  for i = 1, #ids do
    table.insert(out, ids[i])
    table.insert(out, entries[i] or '')
  end
end
return out
