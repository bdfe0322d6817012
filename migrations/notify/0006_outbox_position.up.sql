-- Where the relay's message landed in Kafka (from the producer's acknowledgement). The
-- repeater's stuck-delivery scan compares it with the consumer group's committed offset and
-- the log's watermarks to tell a lost message from one still waiting in a backlog.
ALTER TABLE outbox ADD COLUMN kafka_partition INT, ADD COLUMN kafka_offset BIGINT;
