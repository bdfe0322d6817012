-- notification-service and repeater: what was asked, what was planned, what happened.

CREATE TABLE notifications (
    id          UUID PRIMARY KEY,
    -- JWT subject of the calling service: the owner who may read or cancel it.
    created_by  TEXT        NOT NULL,
    category    TEXT        NOT NULL,
    priority    TEXT        NOT NULL CHECK (priority IN ('high', 'normal', 'low')),
    -- Rendered content {subject?, text, html?, data?}; workers get it verbatim.
    content     JSONB       NOT NULL,
    send_at     TIMESTAMPTZ,
    ttl_seconds INT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notifications_owner ON notifications (created_by, created_at DESC);
CREATE INDEX notifications_created ON notifications (created_at DESC);

-- One row per recipient x channel. A recipient left out by planning is still a row
-- (status 'suppressed' with its reason), so an admin can always see why nothing was sent.
CREATE TABLE deliveries (
    id              UUID PRIMARY KEY,
    notification_id UUID        NOT NULL REFERENCES notifications (id),
    channel         TEXT        NOT NULL,
    lane            TEXT        NOT NULL CHECK (lane IN ('urgent', 'bulk')),
    user_id         UUID,
    -- The recipient as the caller gave it, e.g. {"user_id": "..."} or {"email": "..."}.
    recipient       JSONB       NOT NULL,
    -- The resolved channel address (NULL when none could be resolved).
    address         TEXT,
    status          TEXT        NOT NULL CHECK (status IN ('pending', 'queued', 'sending', 'sent',
                        'retrying', 'dead', 'suppressed', 'cancelled', 'expired')),
    reason          TEXT,
    -- Attempts recorded so far, and the attempt number of the dispatch now in flight.
    attempts        INT         NOT NULL DEFAULT 0,
    current_attempt INT         NOT NULL DEFAULT 1,
    last_error      JSONB,
    locale          TEXT,
    next_attempt_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ
);
CREATE INDEX deliveries_notification ON deliveries (notification_id);
CREATE INDEX deliveries_user ON deliveries (user_id, created_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX deliveries_open ON deliveries (status, updated_at)
    WHERE status IN ('pending', 'queued', 'sending', 'retrying');
CREATE INDEX deliveries_dead ON deliveries (updated_at DESC) WHERE status = 'dead';

-- Every provider attempt as a worker reported it. (delivery_id, attempt) is unique, which
-- makes recording a redelivered status event a no-op.
CREATE TABLE attempts (
    delivery_id         UUID        NOT NULL REFERENCES deliveries (id),
    attempt             INT         NOT NULL,
    outcome             TEXT        NOT NULL,
    provider            TEXT        NOT NULL,
    provider_message_id TEXT,
    error_code          TEXT,
    error_message       TEXT,
    duration_ms         BIGINT      NOT NULL,
    at                  TIMESTAMPTZ NOT NULL,
    recorded_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, attempt)
);

-- The transactional outbox (common/src/outbox.rs). The same in every database that has one.
CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    topic        TEXT        NOT NULL,
    key          TEXT        NOT NULL,
    payload      JSONB       NOT NULL,
    headers      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    available_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ,
    attempts     INT         NOT NULL DEFAULT 0,
    last_error   TEXT
);

CREATE INDEX outbox_due ON outbox (available_at, id) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- NOTIFY is transactional: the relay is woken only when the writing transaction commits.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

