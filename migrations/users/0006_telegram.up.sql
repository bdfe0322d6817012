-- Telegram linking (issue 15, users-service/src/routes/telegram.rs): one-time codes a user
-- gets from POST /v1/me/telegram/link and sends to the bot as `/start <code>`; the bot's
-- updates taken, by `update_id` (Telegram retries a webhook until it gets a 2xx).
CREATE TABLE telegram_link_codes (
    code       TEXT        PRIMARY KEY,
    user_id    UUID        NOT NULL REFERENCES users (id),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE telegram_updates (
    update_id   BIGINT      PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX contacts_telegram ON contacts (telegram_chat_id) WHERE telegram_chat_id IS NOT NULL;
