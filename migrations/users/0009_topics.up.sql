-- Topics: named groups of users one send can address ({"topic": key}); decision 0028.
CREATE TABLE topics (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key         TEXT        NOT NULL UNIQUE,
    name        TEXT,
    -- Users may follow it themselves; closed topics get subscribers from services and admins.
    open        BOOLEAN     NOT NULL DEFAULT false,
    -- Kept by the statements that add and remove subscriptions (never a count over them).
    subscribers BIGINT      NOT NULL DEFAULT 0 CHECK (subscribers >= 0),
    created_by  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (topic, user): subscribe and unsubscribe touch one key. A fan-out reads a
-- topic's rows in user id order (the primary key) as of its acceptance: rows subscribed
-- later are left out; unsubscribing deletes the row.
CREATE TABLE topic_subscriptions (
    topic_id      BIGINT      NOT NULL REFERENCES topics (id),
    user_id       UUID        NOT NULL REFERENCES users (id),
    subscribed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic_id, user_id)
);
-- A user's own topics (GET /v1/me/topics).
CREATE INDEX topic_subscriptions_user ON topic_subscriptions (user_id);
-- The open topics a user may follow, by key.
CREATE INDEX topics_open ON topics (key) WHERE open;
