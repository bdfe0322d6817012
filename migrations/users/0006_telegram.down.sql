DROP INDEX IF EXISTS contacts_telegram;
DROP TABLE IF EXISTS telegram_updates;
DROP TABLE IF EXISTS telegram_link_codes;
