-- The suppression list (issue 15): addresses not to send to any more — a hard bounce, a
-- complaint, or `soft_bounce_threshold` soft bounces in a row. Planning consults it (the
-- delivery is written `suppressed` with reason `bounced` / `complained`); admins list and
-- remove entries (notification-service/src/routes/suppressions.rs).
CREATE TABLE suppressions (
    id         UUID        PRIMARY KEY,
    channel    TEXT        NOT NULL,
    address    TEXT        NOT NULL,
    reason     TEXT        NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'soft_bounces')),
    detail     TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (channel, address)
);
CREATE INDEX suppressions_created ON suppressions (created_at DESC, id DESC);

-- Soft bounces counted per address until the threshold (a delivery that gets through resets
-- nothing here: the count only decides when enough is enough).
CREATE TABLE soft_bounces (
    channel TEXT        NOT NULL,
    address TEXT        NOT NULL,
    count   INT         NOT NULL,
    last_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, address)
);

-- Bounce reports taken, by their `webhook-id`: the same report again is refused.
CREATE TABLE bounce_reports (
    id          TEXT        PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
