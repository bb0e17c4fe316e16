-- Records a live socket of a user.
-- KEYS[1] pr:{b}:u:<userId>  ZSET "<deviceId>|<instanceId>|<socketId>" -> expiry (ms)
-- KEYS[2] pr:{b}:all         ZSET "<userId>\n<entry>" -> expiry (ms)
-- ARGV: entry, expiry, now (ms), entry in pr:all, key TTL (ms)
-- Returns how many live (unexpired) entries the user had before: 0 means they came online.
local now = tonumber(ARGV[3])
local before = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return before
