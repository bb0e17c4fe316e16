-- Removes a socket of a user, and the user's expired entries.
-- KEYS[1] pr:{b}:u:<userId>, KEYS[2] pr:{b}:all (as in presence-add.lua)
-- ARGV: entry, now (ms), entry in pr:all
-- Returns { 1 if the entry was there, live entries left }: { 1, 0 } means they went offline.
local now = tonumber(ARGV[2])
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local after = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
return { removed, after }
