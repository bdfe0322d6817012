-- A row Kafka will never accept (over the broker's message size, a topic that does not exist,
-- an invalid record) is marked failed instead of being retried at the head of the outbox
-- forever (common/src/outbox.rs, decision 0014). Failed rows are never picked again; the
-- delivery they carried is dead (`undeliverable`), and the row stays for an admin to see.
ALTER TABLE outbox ADD COLUMN failed_at TIMESTAMPTZ;

-- Due rows: not published and not failed.
CREATE INDEX outbox_due_live ON outbox (available_at, id)
    WHERE published_at IS NULL AND failed_at IS NULL;
DROP INDEX outbox_due;
CREATE INDEX outbox_failed ON outbox (failed_at) WHERE failed_at IS NOT NULL;
