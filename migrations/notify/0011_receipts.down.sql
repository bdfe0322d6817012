DROP TABLE IF EXISTS receipts;
DROP INDEX IF EXISTS attempts_provider_message;
ALTER TABLE deliveries DROP COLUMN IF EXISTS delivered_at;
UPDATE deliveries SET status = 'sent' WHERE status IN ('delivered', 'undelivered');
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN ('pending', 'queued',
    'sending', 'sent', 'retrying', 'dead', 'suppressed', 'cancelled', 'expired'));
