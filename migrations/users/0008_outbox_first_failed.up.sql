-- When a row's publish first failed (transiently: a partition without a leader, a broker
-- timing out). Transient failures are never a reason to set a row aside any more (issue 28):
-- the row waits with backoff until Kafka takes it, and this column is how long it has been
-- waiting, for the `notify_outbox_oldest_failing_seconds` gauge and its alert.
ALTER TABLE outbox ADD COLUMN first_failed_at TIMESTAMPTZ;
CREATE INDEX outbox_failing ON outbox (first_failed_at)
    WHERE first_failed_at IS NOT NULL AND published_at IS NULL AND failed_at IS NULL;
