-- OfflineQueueRepository.peekIfSynced (ioredis command mqPeekSynced); key layout in offline-queue.repository.ts.
--
-- A device's oldest entries and its queue length, in one round trip, if the queue is in
-- sync with PostgreSQL. KEYS: global epoch, device epoch, queue ZSET, entries HASH; ARGV:
-- limit. Returns {0} when out of sync (or the global epoch is gone), else
-- {1, length, id, entry, id, entry, ...} oldest first ('' for an id without its entry).
local epoch = redis.call('GET', KEYS[1])
if not epoch or redis.call('GET', KEYS[2]) ~= epoch then return {0} end
local ids = redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1)
local out = {1, redis.call('ZCARD', KEYS[3])}
if #ids > 0 then
  local entries = redis.call('HMGET', KEYS[4], unpack(ids))
  for i = 1, #ids do
    table.insert(out, ids[i])
    table.insert(out, entries[i] or '')
  end
end
return out
