-- The in-app inbox (decision 0029). An `in_app` delivery lands as one item; every change to
-- a user's inbox (an item arriving, a mark) takes the next number of that user's sequence
-- (`inbox_counts.last_seq`, allocated under that row's lock, so numbers are given in commit
-- order) and is logged in inbox_events, which the real-time stream replays after a
-- `Last-Event-ID`. The counts are kept with every change: reading them is one row.
CREATE TABLE inbox_counts (
    user_id  UUID PRIMARY KEY,
    unread   BIGINT NOT NULL DEFAULT 0 CHECK (unread >= 0),
    unseen   BIGINT NOT NULL DEFAULT 0 CHECK (unseen >= 0),
    last_seq BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE inbox_items (
    -- The in_app delivery's id.
    id              UUID PRIMARY KEY,
    user_id         UUID        NOT NULL,
    -- The change that brought it (its place, newest highest).
    seq             BIGINT      NOT NULL,
    notification_id UUID        NOT NULL,
    category        TEXT        NOT NULL,
    subject         TEXT,
    text            TEXT        NOT NULL,
    data            JSONB,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at         TIMESTAMPTZ,
    read_at         TIMESTAMPTZ,
    archived_at     TIMESTAMPTZ,
    clicked_at      TIMESTAMPTZ,
    UNIQUE (user_id, seq)
);
-- The lists a user pages through, newest first.
CREATE INDEX inbox_items_unread ON inbox_items (user_id, seq)
    WHERE read_at IS NULL AND archived_at IS NULL;
CREATE INDEX inbox_items_unseen ON inbox_items (user_id) WHERE seen_at IS NULL AND archived_at IS NULL;
CREATE INDEX inbox_items_archived ON inbox_items (user_id, seq) WHERE archived_at IS NOT NULL;
-- Retention.
CREATE INDEX inbox_items_created ON inbox_items (created_at);

CREATE TABLE inbox_events (
    user_id UUID        NOT NULL,
    seq     BIGINT      NOT NULL,
    kind    TEXT        NOT NULL CHECK (kind IN ('new', 'seen', 'read', 'archived', 'clicked', 'read_all', 'seen_all')),
    -- The item changed (none for read_all / seen_all).
    item_id UUID,
    -- The counts after the change.
    unread  BIGINT      NOT NULL,
    unseen  BIGINT      NOT NULL,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX inbox_events_at ON inbox_events (at);
