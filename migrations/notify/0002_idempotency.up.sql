-- Idempotency keys of POST /v1/notifications, per calling service. The primary key is what
-- makes 20 concurrent requests with one key produce one notification.
CREATE TABLE idempotency_keys (
    caller          TEXT        NOT NULL,
    key             TEXT        NOT NULL,
    -- sha256 of the canonical JSON body: same key + different body is refused.
    request_hash    TEXT        NOT NULL,
    state           TEXT        NOT NULL CHECK (state IN ('in_flight', 'done')),
    notification_id UUID,
    response        JSONB,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
