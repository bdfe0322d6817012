-- Sends to a topic (decision 0028): the notification is accepted at once with a fan-out row;
-- its subscribers as of `as_of` are split into chunks of user id ranges and each chunk is
-- planned through intake in one transaction with its row in fanout_chunks, so a chunk
-- handled again (a crash, a redelivery) writes nothing twice.
CREATE TABLE fanouts (
    notification_id UUID PRIMARY KEY REFERENCES notifications (id),
    topic           TEXT        NOT NULL,
    -- The send's channels (NULL: every channel each user allows).
    channels        TEXT[],
    -- Users the send also names directly: reached once, by that.
    exclude         UUID[]      NOT NULL DEFAULT '{}',
    as_of           TIMESTAMPTZ NOT NULL,
    state           TEXT        NOT NULL CHECK (state IN ('splitting', 'planning', 'done', 'cancelled')),
    -- Known once split.
    total           BIGINT,
    chunks          INT,
    chunks_done     INT         NOT NULL DEFAULT 0,
    planned         BIGINT      NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX fanouts_open ON fanouts (created_at) WHERE state IN ('splitting', 'planning');

CREATE TABLE fanout_chunks (
    notification_id UUID        NOT NULL REFERENCES fanouts (notification_id),
    chunk           INT         NOT NULL,
    subscribers     INT         NOT NULL,
    deliveries      INT         NOT NULL,
    planned_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_id, chunk)
);
