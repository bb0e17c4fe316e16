-- OfflineQueueRepository.syncState (ioredis command mqSyncState); key layout in offline-queue.repository.ts.
--
-- A device's queue at connect, in one round trip. KEYS: global epoch, device epoch, z, m,
-- hi, cur; ARGV: a fresh epoch (used if the global one is missing), '1' if the device is
-- new (nothing to rebuild: mark it in sync), conversation and acked-ahead key prefixes.
-- Returns {0, epoch} when the queue must be rebuilt from PostgreSQL first; else
-- {1, length, whole, (conversation, hi, cursor, queued, ackedAhead)...}: `whole` is 0
-- when the structures disagree (one lost entries the others hold), and each conversation
-- the queue knows comes with what PostgreSQL is checked against.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[2], epoch)
  return {1, redis.call('ZCARD', KEYS[3]), 1}
elseif redis.call('GET', KEYS[2]) ~= epoch then
  return {0, epoch}
end
local length = redis.call('ZCARD', KEYS[3])
local out = {1, length, 1}
local hi = redis.call('HGETALL', KEYS[5])
local total = 0
for i = 1, #hi, 2 do
  local conv = hi[i]
  local queued = redis.call('ZCARD', ARGV[3] .. conv)
  total = total + queued
  table.insert(out, conv)
  table.insert(out, hi[i + 1])
  table.insert(out, redis.call('HGET', KEYS[6], conv) or '0')
  table.insert(out, queued)
  table.insert(out, redis.call('ZCARD', ARGV[4] .. conv))
end
if total ~= length or redis.call('HLEN', KEYS[4]) ~= length then out[3] = 0 end
return out
