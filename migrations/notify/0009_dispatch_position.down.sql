ALTER TABLE deliveries
    DROP COLUMN IF EXISTS dispatch_attempt,
    DROP COLUMN IF EXISTS dispatch_partition,
    DROP COLUMN IF EXISTS dispatch_offset,
    DROP COLUMN IF EXISTS dispatched_at;
