-- The repeater's bookkeeping: channel fallback, re-drives, the retry run, the stuck scan.

-- The fallback order the caller asked for (`["push", "sms"]`); NULL = no fallback.
ALTER TABLE notifications ADD COLUMN fallback JSONB;

-- A delivery planned because another one of the same notification ended `dead`.
ALTER TABLE deliveries ADD COLUMN fallback_of UUID REFERENCES deliveries (id);
CREATE UNIQUE INDEX deliveries_fallback_of ON deliveries (fallback_of, channel, address)
    WHERE fallback_of IS NOT NULL;

-- The attempt after which the current retry run began: a re-driven dead letter gets the whole
-- retry schedule again (schedule index = attempt - retry_base).
ALTER TABLE deliveries ADD COLUMN retry_base INT NOT NULL DEFAULT 0;

-- Every re-drive, by whom and why: an admin re-driving a dead letter, or the repeater's scan
-- re-driving a delivery whose dispatch message was lost. Attempt rows stay what workers
-- reported; this is the audit trail of the other hand on the delivery.
CREATE TABLE redrives (
    id           BIGSERIAL PRIMARY KEY,
    delivery_id  UUID        NOT NULL REFERENCES deliveries (id),
    from_attempt INT         NOT NULL,
    to_attempt   INT         NOT NULL,
    -- 'dead_letter' (admin) or 'lost' (stuck scan).
    kind         TEXT        NOT NULL CHECK (kind IN ('dead_letter', 'lost')),
    -- The admin's JWT subject, or 'repeater'.
    actor        TEXT        NOT NULL,
    -- Why the scan judged the message lost, or the status the admin re-drove from.
    detail       TEXT,
    at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX redrives_delivery ON redrives (delivery_id, at);
CREATE INDEX redrives_at ON redrives (at DESC);

-- The stuck scan finds a delivery's published outbox row by its delivery-id header.
CREATE INDEX outbox_published_delivery ON outbox ((headers ->> 'delivery-id'))
    WHERE published_at IS NOT NULL;

-- Dead letters are listed newest first with keyset pagination.
CREATE INDEX deliveries_dead_keyset ON deliveries (updated_at DESC, id DESC) WHERE status = 'dead';
