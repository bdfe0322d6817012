DROP INDEX IF EXISTS outbox_failing;
ALTER TABLE outbox DROP COLUMN IF EXISTS first_failed_at;
