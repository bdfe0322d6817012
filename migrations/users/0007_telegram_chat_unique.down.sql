DROP INDEX contacts_telegram;
CREATE INDEX contacts_telegram ON contacts (telegram_chat_id) WHERE telegram_chat_id IS NOT NULL;
