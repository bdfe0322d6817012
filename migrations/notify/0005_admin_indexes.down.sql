DROP INDEX IF EXISTS notifications_category_created;
DROP INDEX IF EXISTS notifications_created_id;
DROP INDEX IF EXISTS deliveries_status_created;
DROP INDEX IF EXISTS deliveries_channel_created;
DROP INDEX IF EXISTS deliveries_address;
DROP INDEX IF EXISTS deliveries_created;
