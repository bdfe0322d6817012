-- Delivery receipts (issue 15, delivery/src/receipts.rs): a provider's callback moves a sent
-- delivery to `delivered` or `undelivered`. Each receipt is kept once per (provider, message,
-- status): a replayed callback is refused, and one that arrives before the `sent` status
-- event is kept unmatched (delivery_id NULL) until the stuck scan matches it.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN ('pending', 'queued',
    'sending', 'sent', 'retrying', 'dead', 'suppressed', 'cancelled', 'expired', 'delivered',
    'undelivered'));
ALTER TABLE deliveries ADD COLUMN delivered_at TIMESTAMPTZ;

CREATE INDEX attempts_provider_message ON attempts (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;

CREATE TABLE receipts (
    provider            TEXT        NOT NULL,
    provider_message_id TEXT        NOT NULL,
    status              TEXT        NOT NULL CHECK (status IN ('delivered', 'undelivered')),
    error_code          TEXT,
    delivery_id         UUID        REFERENCES deliveries (id),
    received_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, provider_message_id, status)
);
CREATE INDEX receipts_unmatched ON receipts (received_at) WHERE delivery_id IS NULL;
