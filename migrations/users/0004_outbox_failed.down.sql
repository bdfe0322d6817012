DROP INDEX IF EXISTS outbox_failed;
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (available_at, id) WHERE published_at IS NULL;
DROP INDEX IF EXISTS outbox_due_live;
ALTER TABLE outbox DROP COLUMN IF EXISTS failed_at;
