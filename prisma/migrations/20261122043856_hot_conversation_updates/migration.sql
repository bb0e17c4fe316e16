-- DropIndex
DROP INDEX "conversations_last_activity_at_id_idx";

-- Every message updates its conversation's row (last_seq, last_activity_at). With no
-- index on those columns and room left on each page, those are HOT updates: no index
-- entries per message, and dead versions pruned on the page instead of piling up until
-- autovacuum (a chat's hot row otherwise slows every send in it). Prisma's schema does
-- not model storage parameters; the drift check ignores them.
ALTER TABLE "conversations" SET (fillfactor = 50);
