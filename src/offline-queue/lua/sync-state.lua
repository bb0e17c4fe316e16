-- OfflineQueueRepository.syncState (ioredis command mqSyncState); key layout in offline-queue.repository.ts.
--
-- A device's queue at connect, in one round trip. KEYS: device epoch, z, m, hi, cur (one
-- device's keys: one slot); ARGV: the global epoch to mark a new device with ('' for a
-- known device: nothing is written), conversation and acked-ahead key prefixes.
-- Returns {device epoch ('' if none), length, whole, (conversation, hi, cursor, queued,
-- ackedAhead)...}: the caller compares the device epoch with the global one (mq:epoch, in
-- another slot, so read apart: a cluster runs a script on one slot's keys); `whole` is 0
-- when the structures disagree (one lost entries the others hold), and each conversation
-- the queue knows comes with what PostgreSQL is checked against.
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1])
  return {ARGV[1], redis.call('ZCARD', KEYS[2]), 1}
end
local epoch = redis.call('GET', KEYS[1]) or ''
local length = redis.call('ZCARD', KEYS[2])
local out = {epoch, length, 1}
local hi = redis.call('HGETALL', KEYS[4])
local total = 0
for i = 1, #hi, 2 do
  local conv = hi[i]
  local queued = redis.call('ZCARD', ARGV[2] .. conv)
  total = total + queued
  table.insert(out, conv)
  table.insert(out, hi[i + 1])
  table.insert(out, redis.call('HGET', KEYS[5], conv) or '0')
  table.insert(out, queued)
  table.insert(out, redis.call('ZCARD', ARGV[3] .. conv))
end
if total ~= length or redis.call('HLEN', KEYS[3]) ~= length then out[3] = 0 end
return out
