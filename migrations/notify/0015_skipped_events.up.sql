-- Events on notify.events that can never be handled (a welcome whose template does not render,
-- an event that does not decode): recorded here and skipped, so the consumer goes on with the
-- rest instead of retrying one message forever in place (issue 28). Admins read them at
-- GET /v1/admin/skipped-events. One row per Kafka position: a redelivered message is recorded
-- once.
CREATE TABLE skipped_events (
    id          BIGSERIAL   PRIMARY KEY,
    topic       TEXT        NOT NULL,
    kafka_partition INT     NOT NULL,
    kafka_offset BIGINT     NOT NULL,
    event_type  TEXT        NOT NULL,
    key         TEXT,
    payload     TEXT        NOT NULL,
    error       TEXT        NOT NULL,
    skipped_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);
CREATE INDEX skipped_events_recent ON skipped_events (skipped_at DESC, id DESC);
