DROP TABLE cap_counts;
DROP TABLE category_rules;
ALTER TABLE templates DROP COLUMN digest;
ALTER TABLE notifications DROP COLUMN digest, DROP COLUMN cap;
DROP INDEX deliveries_digest;
ALTER TABLE deliveries DROP COLUMN digest_id;
DELETE FROM deliveries WHERE status = 'digested';
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN ('pending', 'queued',
    'sending', 'sent', 'retrying', 'dead', 'suppressed', 'cancelled', 'expired', 'delivered',
    'undelivered'));
DROP TABLE digests;
