DROP INDEX IF EXISTS outbox_due_priority;
ALTER TABLE outbox DROP COLUMN IF EXISTS priority;
