ALTER TABLE outbox DROP COLUMN IF EXISTS kafka_partition, DROP COLUMN IF EXISTS kafka_offset;
