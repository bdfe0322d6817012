DROP INDEX IF EXISTS deliveries_dead_keyset;
DROP INDEX IF EXISTS outbox_published_delivery;
DROP TABLE IF EXISTS redrives;
ALTER TABLE deliveries DROP COLUMN IF EXISTS retry_base;
DROP INDEX IF EXISTS deliveries_fallback_of;
ALTER TABLE deliveries DROP COLUMN IF EXISTS fallback_of;
ALTER TABLE notifications DROP COLUMN IF EXISTS fallback;
