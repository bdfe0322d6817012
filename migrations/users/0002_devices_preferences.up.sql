-- Push devices: a token belongs to one user at a time (unique per platform + token).
CREATE TABLE devices (
    id         UUID PRIMARY KEY,
    user_id    UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    platform   TEXT        NOT NULL CHECK (platform IN ('fcm', 'apns')),
    token      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (platform, token)
);
CREATE INDEX devices_user ON devices (user_id);

-- How a user wants to be reached. Absent keys mean "on": channels {"sms": false},
-- categories {"marketing": {"email": false}}, quiet_hours {"start", "end", "timezone"}.
CREATE TABLE preferences (
    user_id     UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    channels    JSONB       NOT NULL DEFAULT '{}'::jsonb,
    categories  JSONB       NOT NULL DEFAULT '{}'::jsonb,
    quiet_hours JSONB,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
