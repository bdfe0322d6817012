-- A Telegram chat belongs to at most one user (issue 28): before this, PUT /v1/me/contacts and
-- POST /v1/users took any chat id without proof and the bot's `/stop` picked one owner with
-- LIMIT 1. Where a chat is held by several users already, the one who linked it last keeps it
-- (the link flow sets it last); the others lose it, and their cached profile is stale until
-- its TTL (60 s).
UPDATE contacts c SET telegram_chat_id = NULL, updated_at = now()
FROM (
    SELECT user_id, row_number() OVER (PARTITION BY telegram_chat_id
                                       ORDER BY updated_at DESC, user_id) AS n
    FROM contacts WHERE telegram_chat_id IS NOT NULL
) ranked
WHERE c.user_id = ranked.user_id AND ranked.n > 1;

DROP INDEX contacts_telegram;
CREATE UNIQUE INDEX contacts_telegram ON contacts (telegram_chat_id) WHERE telegram_chat_id IS NOT NULL;
