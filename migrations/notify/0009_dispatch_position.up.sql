-- Where the current attempt's dispatch message landed in Kafka, copied from its outbox row by
-- the repeater's scan while the delivery is still open, so a delivery whose message is lost
-- after its outbox row was purged (published rows are kept `relay.retention_secs`) can still
-- be judged and re-driven (repeater/src/stuck.rs, decision 0015).
ALTER TABLE deliveries
    ADD COLUMN dispatch_attempt   INT,
    ADD COLUMN dispatch_partition INT,
    ADD COLUMN dispatch_offset    BIGINT,
    ADD COLUMN dispatched_at      TIMESTAMPTZ;
