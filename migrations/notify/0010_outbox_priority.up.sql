-- Urgent rows first (common/src/outbox.rs): the relay takes due rows by (priority, id), so a
-- row of the urgent lane (priority 0) waits behind at most the batch in flight, never behind
-- a bulk backlog (priority 1, the default). Within one priority rows keep their commit order.
ALTER TABLE outbox ADD COLUMN priority SMALLINT NOT NULL DEFAULT 1;

CREATE INDEX outbox_due_priority ON outbox (priority, id)
    WHERE published_at IS NULL AND failed_at IS NULL;
