DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
DROP TABLE IF EXISTS outbox;
DROP TABLE IF EXISTS attempts;
DROP TABLE IF EXISTS deliveries;
DROP TABLE IF EXISTS notifications;
