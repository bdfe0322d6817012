-- users-service: who the users are and how to reach them.
CREATE TABLE users (
    id         UUID PRIMARY KEY,
    locale     TEXT        NOT NULL DEFAULT 'en',
    timezone   TEXT        NOT NULL DEFAULT 'UTC',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per user; every column optional. Addresses are stored normalised
-- (email with a lower-cased domain, phone in E.164).
CREATE TABLE contacts (
    user_id          UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    email            TEXT,
    phone            TEXT,
    telegram_chat_id TEXT,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
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

