-- Digests and frequency caps (issue 32, decision 0030).
--
-- A digest is one open window per (sending service, channel, recipient, key): the partial
-- unique index makes concurrent first sends through any instance open one and join it. The
-- sends folded into it are deliveries in status `digested` pointing at it; the close is a
-- `notify.digest` message queued in the outbox (due at `closes_at`) by the transaction that
-- opened the window, so it survives any crash. Closing moves `open → closing` (no send joins
-- after that) and then, in one transaction, writes the digest's own notification and marks it
-- `closed` — one digest per window.
CREATE TABLE digests (
    id              UUID PRIMARY KEY,
    created_by      TEXT        NOT NULL,
    channel         TEXT        NOT NULL,
    -- The user id, or the address a raw recipient gave.
    recipient_key   TEXT        NOT NULL,
    user_id         UUID,
    recipient       JSONB       NOT NULL,
    key             TEXT        NOT NULL,
    category        TEXT        NOT NULL,
    -- The first item's template: its digest form renders the digest (NULL: the built-in form).
    template        TEXT,
    window_seconds  INT         NOT NULL,
    opened_at       TIMESTAMPTZ NOT NULL,
    closes_at       TIMESTAMPTZ NOT NULL,
    -- Notifications folded in (a push to two devices is one item).
    items           INT         NOT NULL DEFAULT 1,
    state           TEXT        NOT NULL CHECK (state IN ('open', 'closing', 'closed', 'failed')),
    -- The digest's own notification, once closed.
    notification_id UUID REFERENCES notifications (id),
    error           TEXT,
    closed_at       TIMESTAMPTZ
);
CREATE UNIQUE INDEX digests_one_open ON digests (created_by, channel, recipient_key, key)
    WHERE state = 'open';
CREATE INDEX digests_notification ON digests (notification_id) WHERE notification_id IS NOT NULL;
CREATE INDEX digests_unclosed ON digests (closes_at) WHERE state IN ('open', 'closing');

ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN ('pending', 'queued',
    'sending', 'sent', 'retrying', 'dead', 'suppressed', 'cancelled', 'expired', 'delivered',
    'undelivered', 'digested'));
ALTER TABLE deliveries ADD COLUMN digest_id UUID REFERENCES digests (id);
CREATE INDEX deliveries_digest ON deliveries (digest_id) WHERE digest_id IS NOT NULL;

-- A send's digest and cap, as accepted (a send to a topic plans its chunks with them).
ALTER TABLE notifications ADD COLUMN digest JSONB, ADD COLUMN cap JSONB;

-- A template's digest form, per locale: {subject?, text, html?} rendered with the items.
ALTER TABLE templates ADD COLUMN digest JSONB;

-- Per-category rules admins set: a default digest window, a frequency cap.
CREATE TABLE category_rules (
    category              TEXT PRIMARY KEY,
    digest_window_seconds INT,
    cap_limit             INT,
    cap_window_seconds    INT,
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((cap_limit IS NULL) = (cap_window_seconds IS NULL))
);

-- Frequency cap counters: deliveries counted per user, channel, cap and fixed window. An
-- increment is one upsert that refuses to pass the limit (O(1), exact across instances).
CREATE TABLE cap_counts (
    user_id        UUID        NOT NULL,
    channel        TEXT        NOT NULL,
    -- '*' (the deployment's cap) or a category.
    scope          TEXT        NOT NULL,
    window_seconds INT         NOT NULL,
    window_start   TIMESTAMPTZ NOT NULL,
    count          INT         NOT NULL,
    -- The limit of the last increment (a per-send cap may be lower than the category's).
    cap_limit      INT         NOT NULL,
    PRIMARY KEY (user_id, channel, scope, window_seconds, window_start)
);
CREATE INDEX cap_counts_start ON cap_counts (window_start);
